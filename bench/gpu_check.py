"""Every CUDA path of the project in one command, offline, in a few minutes on one GPU (budget: 8 minutes on an H200).

    python bench/gpu_check.py --models-dir path/to/models --data path/to/dialogsum
    python bench/gpu_check.py --device cpu --tiny     # the same sections as a smoke run on a CPU, narrow models

The models are the flan-t5-small and flan-t5-base architectures from `--models-dir` (default: the repository's
models/, config and tokenizer; the weights are random, `--random-init`), so nothing is downloaded. Each section is caught apart: an error is printed
and the next section runs; the exit code is 1 if any section failed, 2 if there is no GPU (without --device cpu).

1. `run.py --mode full` and `--mode lora` in bf16 autocast: training, validation, checkpoints, generation and
   metrics.json, which must name the precision the run used;
2. `run.py --mode lora --precision fp16`: the GradScaler path, its overflow warning, skipped steps counted
   (on CPU: refused with one line, as fp16 has no CPU loss scaling);
3. fused AdamW: the optimiser the loop builds lives on the device and is fused;
4. resume: a run stopped by the library's Ctrl-C handling after a few steps and resumed ends where a straight run
   ends (losses and weights compared);
5. generation: ours (model/generate.py) against transformers' pipeline, same precision, new tokens/s;
6. training throughput against the trainer stack (bench/trainer_stack.py) in the same precision, real tokens/s,
   and peak memory (`torch.cuda.max_memory_allocated`) of full fine-tuning against LoRA; each side starts from
   the memory allocated before the first (else the section fails: a peak would count the sides before it).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: never wait on the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

NARROW = dict(d_model=64, d_ff=128, num_heads=2, d_kv=32, num_layers=1, num_decoder_layers=1)  # --tiny
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models-dir", default=str(REPO / "models"),
                   help="folder holding flan-t5-small/ and flan-t5-base/ (config.json and tokenizer files)")
    p.add_argument("--data", default=str(REPO / "data" / "dialogsum"))
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--tiny", action="store_true", help="narrow models and a few steps: a smoke run of the script")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per side (section 6)")
    return p.parse_args(argv)


def narrowed(source: Path, folder: Path) -> Path:
    """`source`'s tokenizer and config, narrowed to d_model 64 and 1 + 1 blocks (--tiny)."""
    folder.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)
    config = json.loads((source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **NARROW}))
    return folder


class Check:
    """Runs sections, prints each one's outcome, remembers the failures."""

    def __init__(self):
        self.failed: list[str] = []

    def section(self, title: str, fn, *args) -> None:
        print(f"\n== {title}", flush=True)
        start = time.perf_counter()
        try:
            fn(*args)
            print(f"   ok ({time.perf_counter() - start:.1f} s)", flush=True)
        except Exception as err:  # report, go on with the next section
            frames = traceback.extract_tb(err.__traceback__)  # the innermost line of the project's own code
            last = next((f for f in reversed(frames) if f.filename.startswith(str(REPO))), frames[-1])
            print(f"   FAILED: {type(err).__name__}: {err} ({Path(last.filename).name}:{last.lineno})", flush=True)
            self.failed.append(title)


def run_py(argv: list[str]) -> dict:
    """`python run.py ARGV` in this process; its metrics.json (a non-zero exit raises)."""
    import run

    code = run.main(argv)
    if code != 0:
        raise RuntimeError(f"run.py exited with {code} (its message is above)")
    return json.loads((Path(argv[argv.index("--output-dir") + 1]) / "metrics.json").read_text())


def run_flags(cfg, model: Path, out: Path, mode: str, precision: str) -> list[str]:
    n = 16 if cfg.tiny else 64
    return ["--mode", mode, "--model", str(model), "--random-init", "--data", cfg.data, "--device", cfg.device,
            "--precision", precision, "--max-train-samples", str(n), "--max-steps", "4" if cfg.tiny else "8",
            "--max-val-samples", "4" if cfg.tiny else "16", "--max-eval-samples", "4" if cfg.tiny else "16",
            "--max-new-tokens", "4" if cfg.tiny else "32", "--batch-size", "4" if cfg.tiny else "8",
            "--save-every", "2", "--output-dir", str(out)]


def training_runs(cfg) -> None:
    for mode, model in (("full", cfg.small), ("lora", cfg.base)):
        m = run_py(run_flags(cfg, model, cfg.tmp / f"run-{mode}", mode, cfg.precision))
        print(f"   {mode} on {model.name}: precision {m['train']['precision']} ({m['precision_reason']}), {m['steps']} steps, "
              f"{m['tokens_per_s']:.0f} real tokens/s, peak {m['peak_memory_mb']:.0f} MiB, last loss "
              f"{m['final_train_loss']:.3f}")
        ledger = {k.removesuffix("_bytes"): f"{v / 2**20:,.0f}" for k, v in m["memory_ledger"].items() if k.endswith("_bytes")}
        print(f"   {mode} memory ledger, MiB (model/device.MemoryLedger): {ledger}")
        if m["train"]["precision"] != cfg.precision:
            raise AssertionError(f"metrics.json says {m['train']['precision']}, the run asked for {cfg.precision}")


def fp16_run(cfg) -> None:
    import run
    from model.device import FP16_WARNING

    argv = run_flags(cfg, cfg.small, cfg.tmp / "run-fp16", "lora", "fp16")
    if cfg.device == "cpu":  # no loss scaling on CPU: refused before anything starts
        assert run.main(argv) == 2, "fp16 on CPU must be refused with exit code 2"
        print("   cpu: refused with one line and exit code 2, as it should be")
        return
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        m = run_py(argv)
    if not any(FP16_WARNING in str(w.message) for w in seen):
        raise AssertionError("the fp16 overflow warning was not given")
    print(f"   fp16 warning given; GradScaler skipped {m['skipped_steps']} of {m['steps']} steps; last loss "
          f"{m['final_train_loss']}")


def fused_adamw(cfg) -> None:
    from model.load import build_random_init
    from train_loop.step import OptimConfig, build_optimizer

    model = build_random_init(cfg.small).to(cfg.dev)
    optimizer = build_optimizer(model, OptimConfig(lr=1e-4), cfg.dev)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    assert optimizer.defaults["fused"] and all(p.device.type == cfg.dev.type for p in params)
    model(input_ids=torch.ones(2, 8, dtype=torch.long, device=cfg.dev),
          labels=torch.ones(2, 4, dtype=torch.long, device=cfg.dev)).loss.backward()
    optimizer.step()
    print(f"   fused AdamW stepped {len(params)} tensors on {cfg.dev.type}")


class StopAt(list):
    """Batches that send this process SIGINT (Ctrl-C) when the loop takes batch `index`: the library's
    train_loop/interrupt.py finishes that step, saves a checkpoint and returns."""

    def __init__(self, batches, index):
        super().__init__(batches)
        self.index = index

    def __getitem__(self, key):
        if isinstance(key, slice) and key.start == self.index:
            os.kill(os.getpid(), signal.SIGINT)
        return super().__getitem__(key)


def resume(cfg) -> None:
    from model.load import build_random_init, load_tokenizer
    from train_loop.loop import TrainConfig, train
    from prompting.dialogsum import load_split
    from train_loop.data import batches_by_epoch
    from train_loop.step import OptimConfig

    examples = load_split(cfg.data, "train", max_samples=32, seed=42)
    batches = batches_by_epoch(examples, load_tokenizer(cfg.small), 4, seed=42, max_input_tokens=256,
                               max_label_tokens=64)
    config = TrainConfig(optim=OptimConfig(lr=1e-4), max_steps=6, save_every=2, precision=cfg.precision,
                         progress_bar=False)

    def fresh():  # the same weights and the same random state at the start of training, every time
        model = build_random_init(cfg.small, seed=1).to(cfg.dev)  # dropout 0.1: the restored RNG state matters
        torch.manual_seed(0)
        return model
    straight = fresh()
    expected = train(straight, batches, config, cfg.dev).progress.losses
    first, folder = fresh(), cfg.tmp / "resume"
    folder.mkdir()  # run.py prepares the run folder (train_loop/checkpoint.py); the loop writes into it
    stopped = train(first, lambda e: StopAt(batches(e), 2), config, cfg.dev, folder=folder)
    assert stopped.interrupted, "the run was not stopped"
    second = fresh()
    resumed = train(second, batches, config, cfg.dev, folder=folder, resume=True)
    losses = stopped.progress.losses + resumed.progress.losses[len(stopped.progress.losses):]
    loss_diff = max(abs(a - b) / abs(b) for a, b in zip(losses, expected, strict=True))
    weights = dict(straight.named_parameters())
    weight_diff = max((p - weights[n]).abs().max().item() for n, p in second.named_parameters())
    print(f"   stopped after step {stopped.progress.step}, resumed to {resumed.progress.step}; against the straight "
          f"run: max relative loss difference {loss_diff:.2e}, max |weight difference| {weight_diff:.2e}")
    if loss_diff > 1e-3 or weight_diff > 1e-3:  # CUDA's atomic adds may reorder sums: equal up to rounding
        raise AssertionError("the resumed run does not end where the straight run ends")


def generation(cfg) -> None:
    from bench import generate_sides as sides
    from prompting.dialogsum import load_split
    from model.load import build_random_init, load_tokenizer
    from prompting.prompts import zero_shot_prompt
    from model.device import autocast

    count, new, batch = (8, 4, 4) if cfg.tiny else (128, 32, 16)
    prompts = [zero_shot_prompt(e.dialogue) for e in load_split(cfg.data, "test", max_samples=count)]
    tokenizer, model = load_tokenizer(cfg.base), build_random_init(cfg.base).to(cfg.dev).eval()
    pipe = sides.make_pipeline(model, load_tokenizer(cfg.base), batch)
    runs = {"ours": lambda: sides.ours(model, tokenizer, prompts, batch, new, precision=cfg.precision),
            "pipeline": lambda: sides.pipeline_side(pipe, prompts, new)}
    rates = {}
    for name, summarise in runs.items():
        with sides.GenerateCounter(model) as counter, autocast(cfg.precision, cfg.dev):
            start = time.perf_counter()
            summarise()
            if cfg.dev.type == "cuda":
                torch.cuda.synchronize()
            rates[name] = counter.new_tokens / (time.perf_counter() - start)
        print(f"   {name:<9} {cfg.base.name} {cfg.precision}: {rates[name]:,.0f} new tokens/s "
              f"({counter.new_tokens} tokens, {counter.padding_fraction():.1%} input padding)")
    print(f"   ours / pipeline: {rates['ours'] / rates['pipeline']:.2f}x")


# What may stay allocated after a side beyond the baseline (the cuBLAS workspaces and the like are already there
# from sections 1-5); a side's model left behind is far more: flan-t5-small's fp32 weights alone are 294 MiB.
LEFTOVER_SLACK_BYTES = 64 * 2**20


def allocated_after_release() -> int:
    """CUDA bytes held by live tensors once unreachable objects are collected and cached blocks handed back."""
    gc.collect()
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated()


def check_released(baseline: int, before: str, slack: int = LEFTOVER_SLACK_BYTES) -> None:
    """Raise unless the memory allocated is back to `baseline` (+ `slack`) before the side `before` is measured:
    its peak (`max_memory_allocated`) would otherwise count what earlier sides left. In bf16 accelerate's wrapped
    forward keeps the trainer's model alive in a reference cycle: only gc.collect() frees its weights."""
    left = allocated_after_release() - baseline
    if left > slack:
        raise AssertionError(f"{left / 2**20:,.0f} MiB more than before the first side is still allocated before "
                             f"{before}: its peak memory would be overstated, so it is not measured")


def throughput(cfg) -> None:
    from bench import train_sides

    steps, warmup, batch = (3, 1, 2) if cfg.tiny else (cfg.steps, 3, 8)
    baseline = allocated_after_release() if cfg.dev.type == "cuda" else 0
    for model in (cfg.small, cfg.base):
        peaks = {}
        for mode in ("full", "lora"):
            rates = {}
            for side in ("ours", "trainer-best"):
                if cfg.dev.type == "cuda":
                    check_released(baseline, f"{model.name} {mode} {side}")
                    torch.cuda.reset_peak_memory_stats()
                common = dict(mode=mode, steps=steps, batch_size=batch, warmup=warmup, seed=42, precision=cfg.precision)
                r = (train_sides.run_ours(str(model), cfg.data, count_flops=False, **common) if side == "ours"
                     else train_sides.run_theirs(str(model), cfg.data, recipe="best", **common))
                rates[side] = r["real_tokens"] / r["seconds"]
                peaks[(mode, side)] = r["peak_memory_mb"]
                print(f"   {model.name} {mode:<4} {side:<12} {r['precision']}: {rates[side]:>9,.0f} real tokens/s, "
                      f"peak {r['peak_memory_mb']:,.0f} MiB", flush=True)
            print(f"   {model.name} {mode}: ours / trainer-best {rates['ours'] / rates['trainer-best']:.2f}x")
        memory = "max_memory_allocated" if cfg.dev.type == "cuda" else "peak RSS of this process (grows only)"
        print(f"   {model.name} peak memory, ours: LoRA / full = {peaks[('lora', 'ours')] / peaks[('full', 'ours')]:.0%}"
              f" ({memory})")


def main(argv=None) -> int:
    cfg = parse_args(argv)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU visible (torch {torch.__version__}); run it on a GPU machine, or add "
              f"--device cpu --tiny for a smoke run on the CPU", file=sys.stderr)
        return 2
    from model.device import choose_precision, describe_machine

    cfg.dev = torch.device(cfg.device)
    # bf16 autocast is the path under test on the GPU; on CPU whatever `auto` picks (fp32 where bf16 is emulated)
    cfg.precision, reason = choose_precision("bf16" if cfg.device == "cuda" else "auto", cfg.dev)
    print(f"machine: {describe_machine(cfg.dev)}\nprecision: {reason}; every side of every comparison alike")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        cfg.tmp, models = Path(tmp), Path(cfg.models_dir)
        cfg.small, cfg.base = models / "flan-t5-small", models / "flan-t5-base"
        if cfg.tiny:
            cfg.small = narrowed(models / "flan-t5-small", cfg.tmp / "models" / "flan-t5-small")
            cfg.base = narrowed(models / "flan-t5-small", cfg.tmp / "models" / "flan-t5-base")
        check = Check()
        check.section(f"1. run.py full ({cfg.small.name}) and lora ({cfg.base.name}) in {cfg.precision}", training_runs, cfg)
        check.section("2. run.py lora in fp16 (GradScaler and its warning)", fp16_run, cfg)
        check.section("3. fused AdamW", fused_adamw, cfg)
        check.section("4. resume after the library's Ctrl-C stop, against a straight run", resume, cfg)
        check.section("5. generation: ours against transformers' pipeline", generation, cfg)
        check.section("6. training throughput against the trainer stack; peak memory full vs LoRA", throughput, cfg)
    print(f"\n{6 - len(check.failed)} of 6 sections passed in {time.perf_counter() - started:.0f} s"
          + (f"; FAILED: {'; '.join(check.failed)}" if check.failed else ""))
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())

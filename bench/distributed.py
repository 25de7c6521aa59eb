"""Two processes against one: how close the training is, and how fast.

    python bench/distributed.py equivalence   # narrow flan-t5 (d_model 64), 4 steps: largest differences, 1 vs 2
    python bench/distributed.py throughput    # flan-t5-small, 10 steps of 8 dialogues: tokens/s, 1 vs 2 processes

Both run `run.py` itself: one process as `python run.py`, two as `torchrun --standalone --nproc_per_node 2 run.py`
(gloo on the CPU). `equivalence` compares what tests/test_distributed.py asserts on (logged losses and gradient
norms, saved weights), with LoRA and full fine-tuning, DDP and `--fsdp`, global batch 8 (4 per process) and
accumulation 2, fp32 and no dropout: the test's settings, written out here (benchmarks do not import the tests).
`throughput` reads tokens/s from each run's metrics.json (real tokens over the whole training time, validation and
checkpoints included) and the median of the per-step figures in train_log.jsonl, for one process with one thread,
two processes with one thread each, and one process with two threads (the fair comparison on a 2-core machine: the
same cores, shared by threads instead of processes).
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from safetensors.torch import load_file  # noqa: E402

from train_loop.loop import LOG_FILE, read_log  # noqa: E402
from model.device import describe_machine  # noqa: E402

SMALL_DIR = REPO / "models" / "flan-t5-small"
DATA_DIR = REPO / "data" / "dialogsum"
# flan-t5-small's tokenizer and config, narrowed (d_model 64, 1+1 blocks) and without dropout: only a dropout-free
# run can equal the single-process one (N processes draw other masks than one).
NARROW = dict(d_model=64, d_ff=128, num_heads=2, d_kv=32, num_layers=1, num_decoder_layers=1, dropout_rate=0.0)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def sh(command: list[str], threads: int = 1) -> None:
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})


def flags(model_dir, out, *extra):
    """Global batch 8 (4 per process), accumulation 2: 4 steps over 2 epochs of 32 dialogues, a checkpoint every 2."""
    return ["--model", str(model_dir), "--random-init", "--data", str(DATA_DIR), "--max-train-samples", "32",
            "--max-val-samples", "8", "--max-eval-samples", "6", "--max-steps", "4", "--batch-size", "8",
            "--grad-accum", "2", "--max-input-tokens", "64", "--max-target-tokens", "24", "--max-new-tokens", "4",
            "--save-every", "2", "--precision", "fp32", "--device", "cpu", "--output-dir", str(out), *extra]


def losses(folder, key="loss") -> list[float]:
    return [r[key] for r in read_log(folder / LOG_FILE) if key in r]


def weights(folder) -> dict:
    name = "adapter/adapter_model.safetensors" if (folder / "adapter").is_dir() else "model/model.safetensors"
    return load_file(folder / name)


def max_difference(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def equivalence(root: Path) -> None:
    model_dir = root / "narrow-flan-t5"
    model_dir.mkdir()
    for name in ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(SMALL_DIR / name, model_dir / name)
    (model_dir / "config.json").write_text(json.dumps({**json.loads((SMALL_DIR / "config.json").read_text()), **NARROW}))

    def argv(mode: str, name: str, *extra: str) -> list[str]:
        return ["--mode", mode, *flags(model_dir, root / name, *(("--lora-dropout", "0") if mode == "lora" else ()), *extra)]

    for mode in ("lora", "full"):
        sh([sys.executable, "run.py", *argv(mode, f"one-{mode}")])
        sh([*TORCHRUN, "run.py", *argv(mode, f"ddp-{mode}")])
        sh([*TORCHRUN, "run.py", *argv(mode, f"fsdp-{mode}", "--fsdp")])
    print("two processes against one (4 steps, batch 8 = 4 + 4, accumulation 2, fp32, no dropout):")
    print("run        | max |loss diff| | max rel. grad-norm diff | max |weight diff|")
    for mode in ("lora", "full"):
        one = root / f"one-{mode}"
        for kind in ("ddp", "fsdp"):
            two = root / f"{kind}-{mode}"
            loss = max(abs(a - b) for a, b in zip(losses(one), losses(two), strict=True))
            norm = max(abs(a - b) / b for a, b in zip(losses(two, "grad_norm"), losses(one, "grad_norm"), strict=True))
            print(f"{kind:4} {mode:5} | {loss:.2e}        | {norm:.2e}                | "
                  f"{max_difference(weights(two), weights(one)):.2e}")


def throughput(root: Path) -> None:
    common = ["--model", str(SMALL_DIR), "--random-init", "--data", str(DATA_DIR), "--max-train-samples", "160",
              "--max-val-samples", "16", "--max-eval-samples", "4", "--max-new-tokens", "16", "--max-steps", "10",
              "--batch-size", "8", "--device", "cpu", "--precision", "fp32"]
    setups = {"1 process, 1 thread": ([sys.executable, "run.py"], 1),
              "2 processes, 1 thread each": ([*TORCHRUN, "run.py"], 1),
              "1 process, 2 threads": ([sys.executable, "run.py"], 2)}
    print("flan-t5-small (random weights), 10 steps of 8 dialogues, fp32, CPU:")
    print("mode | setup                      | tokens/s (metrics.json) | median step tokens/s | train seconds")
    for mode in ("lora", "full"):
        for name, (launcher, threads) in setups.items():
            out = root / f"{mode}-{name.replace(' ', '-').replace(',', '')}"
            sh([*launcher, "--mode", mode, *common, "--output-dir", str(out)], threads)
            metrics = json.loads((out / "metrics.json").read_text())
            steps = statistics.median(losses(out, "tokens_per_s"))
            print(f"{mode:4} | {name:26} | {metrics['tokens_per_s']:23.0f} | {steps:20.0f} | {metrics['train_seconds']}")


if __name__ == "__main__":
    if sys.argv[1:] not in (["equivalence"], ["throughput"]):
        sys.exit(__doc__)
    print(f"machine: {describe_machine('cpu')}; precision: fp32 on every side (--precision fp32)")
    with tempfile.TemporaryDirectory() as tmp:
        {"equivalence": equivalence, "throughput": throughput}[sys.argv[1]](Path(tmp))

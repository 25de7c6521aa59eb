"""The sides of bench/bench_train.py, each run in a fresh process: ours, the trainer stack, the matmul peak.

Every side trains on the same work (`work_examples`): the first N of a seeded shuffle of DialogSum train, the
zero-shot prompt as input and the first summary as target, the architecture of `--model` with random weights
built by the same seed. Each returns a dict the parent process prints: the loss of every step, the real
(non-padding) input + label tokens and the seconds of the timed steps (all steps after the first `warmup`), and
the process's peak memory (CUDA: `max_memory_allocated`; CPU: the peak resident set of this fresh process).
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from prompting.dialogsum import load_split
from model.load import build_random_init, load_tokenizer
from prompting.prompts import zero_shot_prompt
from model.device import peak_memory_mb


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_py_settings(mode: str, model_dir) -> tuple:
    """(LoRAConfig or None, TrainConfig) exactly as `run.py --mode <mode>` builds them with its default flags, the
    learning rate included (modes/train_config.py's default for this model's width)."""
    import run
    from modes.train_config import config_from_args

    config = config_from_args(run.build_parser().parse_args(["--mode", mode, "--model", str(model_dir)]))
    return config.lora, config.train


def work_examples(data: str, count: int, seed: int):
    return load_split(data, "train", max_samples=count, seed=seed)


def run_ours(model_dir, data, mode, steps, batch_size, warmup, seed, count_flops=True, precision="auto") -> dict:
    """Our loop as `run.py --mode full|lora` drives it (run.py's defaults, train_loop.data.batches_by_epoch,
    cpu_speed.speed_up_on_cpu on CPU, loop.train), with no run folder. Step times come from the loop's `on_step`
    hook, called as each step's record is written. `precision` is the requested one ('auto', 'fp32', 'bf16'),
    made concrete by model/device.py as run.py does."""
    from train_loop import loop
    from train_loop.data import batches_by_epoch
    from model.device import choose_precision

    dev = device()
    lora, config = run_py_settings(mode, model_dir)
    tokenizer = load_tokenizer(model_dir)
    model = build_random_init(model_dir, seed=seed)
    torch.manual_seed(seed)
    if mode == "lora":
        from lora.layer import add_lora

        add_lora(model, replace(lora, init_seed=seed))  # A drawn as run.py --seed <seed> draws it
    if dev.type == "cpu":
        from train_loop.cpu_speed import speed_up_on_cpu

        speed_up_on_cpu(model)
    batches_for_epoch = batches_by_epoch(work_examples(data, steps * batch_size, seed), tokenizer, batch_size, seed)
    precision, _ = choose_precision(precision, dev)
    config = replace(config, max_steps=steps, precision=precision, progress_bar=False)

    records = []  # (time the step's record was written, CPU time, record)

    def clock(record):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        records.append((time.perf_counter(), time.process_time(), record))

    result = loop.train(model, batches_for_epoch, config, dev, on_step=clock)
    (start, cpu_start, _), (end, cpu_end, _) = records[warmup - 1], records[steps - 1]
    tokens = sum(r["tokens"] for _, _, r in records[warmup:steps])
    out = {"losses": result.progress.losses, "seconds": end - start, "cpu_seconds": cpu_end - cpu_start,
           "real_tokens": tokens, "precision": precision, "peak_memory_mb": peak_memory_mb(dev)}
    if count_flops:
        out["flops"] = training_flops(model, batches_for_epoch(0)[warmup:steps], precision, dev)
    return out


def training_flops(model, batches, precision, dev) -> int:
    """Matmul FLOPs of forward + backward on these batches, counted by torch's FlopCounterMode while running our
    loss (train_loop.step.token_loss_sum) on them: what the timed steps executed, padding included."""
    from train_loop.step import to_device, token_loss_sum

    counter = FlopCounterMode(display=False)
    with counter:
        for batch in batches:
            token_loss_sum(model, to_device(batch, dev), precision, dev).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run_theirs(model_dir, data, mode, recipe, steps, batch_size, warmup, seed, precision="auto") -> dict:
    """Seq2SeqTrainer (+ peft for LoRA) through bench/trainer_stack.py, on the same examples, in the precision
    model/device.py chooses for ours from the same request."""
    from model.device import choose_precision

    from bench.trainer_stack import run_trainer

    examples = work_examples(data, steps * batch_size, seed)
    model = build_random_init(model_dir, seed=seed)
    torch.manual_seed(seed)
    settings, config = run_py_settings(mode, model_dir)
    lora = {"lora_r": settings.r, "lora_alpha": settings.alpha, "lora_dropout": settings.dropout}
    out = run_trainer(model, load_tokenizer(model_dir), [zero_shot_prompt(e.dialogue) for e in examples],
                      [e.references[0] for e in examples], recipe=recipe, lora=mode == "lora", steps=steps,
                      batch_size=batch_size, lr=config.optim.lr, warmup_steps_timed=warmup, seed=seed,
                      precision=choose_precision(precision, device())[0], **lora)
    out["peak_memory_mb"] = peak_memory_mb(device())
    return out


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """Best FLOP/s of an (n, n) @ (n, n) product in `dtype` on this device: the machine's limit we compare to."""
    dev = device()
    a, b = (torch.randn(n, n, device=dev).to(dtype) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):  # the first product is a warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best

"""The sides of bench/bench_train.py, each run in a fresh process: ours, the trainer stack, the matmul peak.

Every side trains on the same work (`work_examples`): the first N of a seeded shuffle of DialogSum train, the
zero-shot prompt as input and the first summary as target, the architecture of `--model` with random weights
built by the same seed. Each returns a dict the parent process prints: the loss of every step, the real
(non-padding) input + label tokens and the seconds of the timed steps (all steps after the first `warmup`), and
the process's peak memory (CUDA: `max_memory_allocated`; CPU: the peak resident set of this fresh process).
"""
from __future__ import annotations

import resource
import time
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

from prompting.dialogsum import load_split
from prompting.model import build_random_init, load_tokenizer
from prompting.templates import zero_shot_prompt

LORA = dict(r=32, alpha=32, dropout=0.05)  # the course lab's LoRA settings (docs/NOTES.md), on q and v
LR = {"full": 1e-4, "lora": 1e-3}
WEIGHT_DECAY, MAX_GRAD_NORM = 0.01, 1.0


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


def work_examples(data: str, count: int, seed: int):
    return load_split(data, "train", max_samples=count, seed=seed)


def run_ours(model_dir, data, mode, steps, batch_size, warmup, seed, count_flops=True, precision="auto") -> dict:
    """Our loop exactly as `run.py --mode full|lora` drives it (run_training.encoded_batches,
    speed_up_on_cpu, loop.train), with no run folder. Step times come from the loop's own log records, taken as each is written.
    `precision` is the requested one ('auto', 'fp32', 'bf16'), made concrete by train_loop/precision.py as run.py does."""
    from train_loop import loop
    from train_loop.optim import OptimConfig
    from train_loop.precision import choose_precision
    from train_loop.run_training import encoded_batches, speed_up_on_cpu

    dev = device()
    tokenizer = load_tokenizer(model_dir)
    model = build_random_init(model_dir, seed=seed)
    torch.manual_seed(seed)
    if mode == "lora":
        from lora.inject import add_lora

        add_lora(model, targets=("q", "v"), **LORA)
    speed_up_on_cpu(model, dev)
    args = SimpleNamespace(data=data, seed=seed, batch_size=batch_size, max_input_tokens=512, max_target_tokens=128)
    _, batches_for_epoch = encoded_batches(args, tokenizer, "train", steps * batch_size)
    precision, _ = choose_precision(precision, dev)
    config = loop.TrainConfig(optim=OptimConfig(lr=LR[mode], weight_decay=WEIGHT_DECAY), max_steps=steps,
                              max_grad_norm=MAX_GRAD_NORM, precision=precision, progress_bar=False)

    records = []  # (time the step's record was written, record)

    class ClockedLog(loop.TrainLog):  # folder=None writes nothing; we only want the clock
        def write(self, record):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            records.append((time.perf_counter(), time.process_time(), record))

    loop.TrainLog = ClockedLog
    result = loop.train(model, batches_for_epoch, config, dev)
    steps_done = [(t, cpu, r) for t, cpu, r in records if "loss" in r]
    (start, cpu_start, _), (end, cpu_end, _) = steps_done[warmup - 1], steps_done[steps - 1]
    tokens = sum(r["tokens"] for _, _, r in steps_done[warmup:steps])
    out = {"losses": result.progress.losses, "seconds": end - start, "cpu_seconds": cpu_end - cpu_start,
           "real_tokens": tokens, "precision": precision, "peak_memory_mb": peak_memory_mb()}
    if count_flops:
        out["flops"] = training_flops(model, batches_for_epoch(0)[warmup:steps], precision, dev)
    return out


def training_flops(model, batches, precision, dev) -> int:
    """Matmul FLOPs of forward + backward on these batches, counted by torch's FlopCounterMode while running our
    loss (train_loop.loop.token_loss_sum) on them: what the timed steps executed, padding included."""
    from train_loop.loop import to_device, token_loss_sum

    counter = FlopCounterMode(display=False)
    with counter:
        for batch in batches:
            token_loss_sum(model, to_device(batch, dev), precision, dev).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run_theirs(model_dir, data, mode, recipe, steps, batch_size, warmup, seed, precision="auto") -> dict:
    """Seq2SeqTrainer (+ peft for LoRA) through bench/trainer_stack.py, on the same examples, in the precision
    train_loop/precision.py chooses for ours from the same request."""
    from train_loop.precision import choose_precision

    from bench.trainer_stack import run_trainer

    examples = work_examples(data, steps * batch_size, seed)
    model = build_random_init(model_dir, seed=seed)
    torch.manual_seed(seed)
    lora = {"lora_r": LORA["r"], "lora_alpha": LORA["alpha"], "lora_dropout": LORA["dropout"]}
    out = run_trainer(model, load_tokenizer(model_dir), [zero_shot_prompt(e.dialogue) for e in examples],
                      [e.references[0] for e in examples], recipe=recipe, lora=mode == "lora", steps=steps,
                      batch_size=batch_size, lr=LR[mode], warmup_steps_timed=warmup, seed=seed,
                      precision=choose_precision(precision, device())[0], **lora)
    out["peak_memory_mb"] = peak_memory_mb()
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

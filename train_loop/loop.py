"""One training loop for full and LoRA fine-tuning: epochs of optimiser steps (step.py), validation, checkpoints,
and the log it writes.

Each step takes the next `grad_accum` micro-batches of the epoch (fewer at an epoch's end, as the Trainer does).
The validation loss is measured at each epoch end, every `eval_every` steps and at the last step, keeping the
weights with the lowest; a checkpoint (checkpoint.py) is written every `save_every` steps, at the last step and on
Ctrl-C. It holds `Progress` and all else the next step depends on, so a resumed run continues with the same numbers.
Ctrl-C could land inside `optimizer.step()`, half the weights updated: so the first one only sets a flag read
between steps (the loop then saves and returns); a second one interrupts at once.

`train_log.jsonl`: one JSON line per step, `{"step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s",
"peak_memory_mb"}`, and one per validation, `{"step", "val_loss"}`; `loss` is the mean cross-entropy per label token
over the whole step, what `Seq2SeqTrainer` logs with `logging_steps=1`. A resumed run first cuts it back to its step.

`ddp` is None for one process; under torchrun (distributed.py) it wraps the loss, sums counts over the processes,
lets all agree to stop after the same step and saves checkpoints as collectives; only rank 0 writes the log.
"""
from __future__ import annotations

import json
import math
import resource
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from train_loop import checkpoint as ckpt
from train_loop.precision import grad_scaler
from train_loop.step import (Batch, NonFiniteLoss, OptimConfig, build_optimizer, build_scheduler, label_tokens,
                             optimizer_step, to_device, token_loss_sum)


@dataclass(frozen=True)
class TrainConfig:
    optim: OptimConfig
    epochs: float = 1.0
    max_steps: int | None = None     # overrides epochs
    grad_accum: int = 1
    max_grad_norm: float = 1.0       # 0: no clipping (the norm is still logged)
    eval_every: int = 0              # validation every N steps; always at each epoch end and at the last step
    save_every: int = 0              # checkpoint every N steps; always at the last step and on Ctrl-C
    precision: str = "fp32"          # fp32 | bf16 | fp16, already resolved for the device (precision.py)
    progress_bar: bool = True

    def __post_init__(self):
        if not self.epochs > 0:
            raise ValueError(f"--epochs {self.epochs}: must be positive")
        for name, least in (("max_steps", 1), ("grad_accum", 1), ("max_grad_norm", 0), ("eval_every", 0),
                            ("save_every", 0)):
            value = getattr(self, name)
            if value is not None and value < least:
                raise ValueError(f"--{name.replace('_', '-')} {value}: must be {'at least 1' if least else '>= 0'}")


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""
    step: int = 0                    # optimiser steps done
    epoch: int = 0
    position: int = 0                # next micro-batch of the epoch
    losses: list = field(default_factory=list)      # train loss per step
    val_losses: list = field(default_factory=list)  # [step, validation loss]
    best_val_loss: float | None = None
    best_step: int | None = None
    tokens: int = 0                  # real (non-pad) input + label tokens seen
    train_seconds: float = 0.0
    skipped_steps: int = 0           # fp16: steps the GradScaler skipped for inf/NaN gradients


@dataclass
class TrainResult:
    progress: Progress
    total_steps: int
    interrupted: bool
    checkpoint: Path | None
    peak_memory_mb: float


LOG_FILE = "train_log.jsonl"


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the most memory tensors have held; CPU: the process's peak resident set size (Linux reports KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


class TrainLog:
    """Appends one JSON line per record, closing the file each time so a killed run keeps what it logged."""

    def __init__(self, folder: Path | None, resume_step: int = 0):
        self.path = None if folder is None else Path(folder) / LOG_FILE
        if self.path is None:
            return
        kept = read_log(self.path) if self.path.is_file() else []
        kept = [r for r in kept if r["step"] <= resume_step] if resume_step else []
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict]:
    """The records of a log; a last line cut short by a kill is dropped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


class StopOnInterrupt:
    """Context manager with a `requested` flag set by the first SIGINT; a second SIGINT interrupts at once."""

    def __init__(self):
        self.requested, self._previous = False, None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def validation_loss(model, batches: list[Batch], precision: str, device: torch.device, forward=None,
                    ddp=None) -> float:
    """Mean cross-entropy per label token over all validation batches (dropout off), and over every process's share."""
    forward = forward or partial(token_loss_sum, model, precision=precision, device=device)
    model.eval()
    total, count = torch.zeros((), device=device), sum(label_tokens(b) for b in batches)
    with torch.no_grad():
        for batch in batches:
            total += forward(to_device(batch, device))
    model.train()
    if ddp:
        total, count = ddp.sum(total), ddp.total(count)
    return total.item() / max(1, count)


def train(model, batches_for_epoch: Callable[[int], list[Batch]], config: TrainConfig, device: torch.device,
          folder: Path | None = None, val_batches: list[Batch] = (), resume: bool = False,
          fingerprint: dict | None = None, ddp=None, on_step: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `model` in place on `batches_for_epoch(epoch)` (deterministic per epoch, so a resume can skip ahead).

    `folder` receives checkpoints/, train_log.jsonl and best weights; None trains without writing anything.
    `on_step(record)` sees each step's log record as it is written (benchmarks time the steps with it).
    """
    model.train()
    loss_sum = partial(token_loss_sum, precision=config.precision, device=device)
    forward = ddp.wrap(model, loss_sum, device) if ddp else partial(loss_sum, model.to(device))
    store = ddp.checkpoints if ddp else ckpt  # checkpoint.py's functions; under torchrun the same, as collectives
    main = ddp is None or ddp.main
    batches, batches_epoch = batches_for_epoch(0), 0  # every epoch has as many batches as this one
    steps_per_epoch = math.ceil(len(batches) / config.grad_accum)
    total = config.max_steps or math.ceil(config.epochs * steps_per_epoch)
    optimizer = build_optimizer(model, config.optim, device)
    scheduler = build_scheduler(optimizer, config.optim, total)
    scaler = grad_scaler(config.precision, device)
    fingerprint = {**(fingerprint or {}), "total_steps": total, "grad_accum": config.grad_accum,
                   "processes": ddp.world_size if ddp else 1, "fsdp": bool(ddp and ddp.fsdp),
                   "trainable": {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad}}
    progress, saved = Progress(), None
    if resume:
        saved = store.latest_checkpoint(folder) if folder is not None else None
        if saved is None:
            raise ValueError(f"--resume: no checkpoint in {folder}/{ckpt.CHECKPOINT_DIR}; run without --resume")
        progress = Progress(**store.load_checkpoint(saved, model, optimizer, scheduler, scaler, fingerprint))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log = TrainLog(folder if main else None, resume_step=progress.step)
    bar = tqdm(total=total, initial=progress.step, disable=not (config.progress_bar and main), desc="training")
    with StopOnInterrupt() as stop:
        while progress.step < total and not stop.requested:
            tick = time.perf_counter()
            if batches_epoch != progress.epoch:
                batches, batches_epoch = batches_for_epoch(progress.epoch), progress.epoch
            micro = batches[progress.position:progress.position + config.grad_accum]
            lr = scheduler.get_last_lr()[0]
            try:
                loss, grad_norm, skipped = optimizer_step(forward, micro, optimizer, scheduler, scaler,
                                                          config.max_grad_norm, device, ddp)
            except NonFiniteLoss as err:
                raise NonFiniteLoss(f"step {progress.step + 1}: {err}; training stopped before updating the weights. "
                                    f"Last good checkpoint: {saved or 'none yet'}. Try a lower --lr, or "
                                    f"--precision fp32") from None
            tokens = sum(int(b["attention_mask"].sum()) + label_tokens(b) for b in micro)
            if ddp:
                stop.requested = ddp.any(stop.requested)  # Ctrl-C reaches processes at different moments
                tokens = ddp.total(tokens)
            progress.step, progress.position = progress.step + 1, progress.position + len(micro)
            progress.tokens, progress.skipped_steps = progress.tokens + tokens, progress.skipped_steps + skipped
            progress.losses.append(loss)
            epoch_end = progress.position >= len(batches)
            if epoch_end:
                progress.epoch, progress.position = progress.epoch + 1, 0
            seconds = time.perf_counter() - tick
            record = {"step": progress.step, "epoch": round(progress.step / steps_per_epoch, 4), "loss": loss,
                      "lr": lr, "grad_norm": grad_norm, "tokens": tokens, "tokens_per_s": tokens / seconds,
                      "peak_memory_mb": peak_memory_mb(device), **({"skipped": True} if skipped else {})}
            log.write(record)
            if on_step:
                on_step(record)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens / seconds:.0f}")
            bar.update(1)

            last = progress.step == total
            if val_batches and (epoch_end or last or (config.eval_every and progress.step % config.eval_every == 0)):
                val = validation_loss(model, val_batches, config.precision, device, forward, ddp)
                progress.val_losses.append([progress.step, val])
                log.write({"step": progress.step, "val_loss": val})
                if progress.best_val_loss is None or val < progress.best_val_loss:
                    progress.best_val_loss, progress.best_step = val, progress.step
                    if folder is not None:
                        store.save_best(folder, model)
            progress.train_seconds += time.perf_counter() - tick
            if folder is not None and (last or stop.requested or (config.save_every and progress.step % config.save_every == 0)):
                saved = store.save_checkpoint(folder, model, optimizer, scheduler, scaler, asdict(progress), fingerprint)
    bar.close()
    # Ctrl-C in the last step is an interruption too (the runner stops before its possibly long evaluation; a resume
    # finds nothing to train and evaluates). Every process must agree: one may have been told after the last `any`.
    interrupted = ddp.any(stop.requested) if ddp else stop.requested
    peak = ddp.max(peak_memory_mb(device)) if ddp else peak_memory_mb(device)  # the largest process's: what must fit
    return TrainResult(progress, total, interrupted, saved, peak)

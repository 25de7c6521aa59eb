"""One training loop for full and LoRA fine-tuning: epochs of optimiser steps (step.py), validation, checkpoints,
and the log it writes.

Each step takes the next `grad_accum` micro-batches of the epoch (fewer at an epoch's end, as the Trainer does).
The validation loss is measured at each epoch end, every `eval_every` steps and at the last step, keeping the
weights with the lowest; with `select_by` one of ROUGE's types, the weights whose summaries of the validation
dialogues score highest instead (`val_rouge(model)`, made by train_loop/val_rouge.py with the run's own generation
settings: transformers' summarisation example measured a ROUGE during training far from the final one when they
differed, transformers#13490). After `patience` validations in a row without a better one the run stops early (the
Trainer's `EarlyStoppingCallback`). A checkpoint (checkpoint.py) is written every `save_every` steps, at the last
step, on stopping early and on Ctrl-C, holding all the next step depends on: a resumed run continues with the same
numbers. Ctrl-C could land inside `optimizer.step()`, so the first one only sets a flag read between steps; a
second one interrupts at once.

`train_log.jsonl`: one JSON line per step, `{"step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s",
"peak_memory_mb"}`, and one per validation, `{"step", "val_loss"}` (with `val_rouge1` ... `val_rougeLsum` when
selecting by ROUGE); `loss` is the mean cross-entropy per label token over the whole step, what `Seq2SeqTrainer`
logs with `logging_steps=1`.

`processes` is `OneProcess` below, or under torchrun distributed.py's `Parallel`: it wraps the loss, sums over the
processes, lets all agree to stop after the same step and saves checkpoints as collectives.
"""
from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from model.device import grad_scaler, peak_memory_mb
from train_loop import checkpoint as ckpt
from train_loop.step import (Batch, NonFiniteLoss, OptimConfig, build_optimizer, build_scheduler, label_tokens,
                             optimizer_step, to_device, token_loss_sum)


SELECT_BY = ("loss", "rouge1", "rouge2", "rougeL", "rougeLsum")


@dataclass(frozen=True)
class TrainConfig:
    optim: OptimConfig
    epochs: float = 1.0
    max_steps: int | None = None     # overrides epochs
    grad_accum: int = 1
    max_grad_norm: float = 1.0       # 0: no clipping (the norm is still logged)
    eval_every: int = 0              # validation every N steps; always at each epoch end and at the last step
    save_every: int = 0              # checkpoint every N steps; always at the last step and on Ctrl-C
    precision: str = "fp32"          # fp32 | bf16 | fp16, already resolved for the device (model/device.py)
    progress_bar: bool = True
    select_by: str = "loss"          # keep the lowest validation loss, or the highest validation ROUGE of this type
    patience: int = 0                # stop after this many validations without a better one (0: never)

    def __post_init__(self):
        if not self.epochs > 0:
            raise ValueError(f"--epochs {self.epochs}: must be positive")
        if self.select_by not in SELECT_BY:
            raise ValueError(f"--select-by {self.select_by}: expected one of {', '.join(SELECT_BY)}")
        if self.patience < 0:
            raise ValueError(f"--early-stopping-patience {self.patience}: must be 0 (never) or more")
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
    best_val_loss: float | None = None  # of the weights kept
    best_step: int | None = None
    best_score: float | None = None     # the kept weights' value of select_by (their loss, or their ROUGE)
    validations_since_best: int = 0
    stopped_early: bool = False
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


class TrainLog:
    """Appends one JSON line per record, closing the file each time so a killed run keeps what it logged; a resumed
    run first cuts it back to its step."""

    def __init__(self, folder: Path | None, resume_step: int = 0):
        self.path = None if folder is None else Path(folder) / LOG_FILE
        if self.path is not None:
            kept = read_log(self.path) if resume_step and self.path.is_file() else []
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept if r["step"] <= resume_step))

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

    def __enter__(self):
        self.requested, self.previous = False, None
        if threading.current_thread() is threading.main_thread():  # Python lets only the main thread set handlers
            self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class OneProcess:
    """A run's processes when it has one: rank 0 of 1, every collective the identity, checkpoint.py's own functions.
    Under torchrun distributed.py's `Parallel` has the same methods, so the step, this loop and modes/train.py read
    the same for both (as nanochat's `compute_init` gives rank 0 of 1), and one process never imports distributed.py."""
    rank, world_size, main, fsdp = 0, 1, True, False
    checkpoints = ckpt  # latest_checkpoint, save_checkpoint, load_checkpoint, save_best, load_best

    def wrap(self, model: nn.Module, loss_sum: Callable, device: torch.device) -> Callable:
        return partial(loss_sum, model.to(device))

    def gradient_sync(self, wrapped, enabled: bool):
        return nullcontext()

    def sum(self, value):  # one process's value is the sum, total, any and max over all of them
        return value
    total = any = max = plain = sum

    def run_on_main(self, work: Callable):
        return work()

    def share(self, items: list) -> list:  # the whole list is its share, and gathering the shares gives it back
        return items
    gather_shares = share


ONE_PROCESS = OneProcess()


def validation_loss(model, batches: list[Batch], precision: str, device: torch.device, forward=None,
                    processes=ONE_PROCESS) -> float:
    """Mean cross-entropy per label token over all validation batches (dropout off), and over every process's share."""
    forward = forward or partial(token_loss_sum, model, precision=precision, device=device)
    model.eval()
    total, count = torch.zeros((), device=device), sum(label_tokens(b) for b in batches)
    with torch.no_grad():
        for batch in batches:
            total += forward(to_device(batch, device))
    model.train()
    return processes.sum(total).item() / max(1, processes.total(count))


def keep_if_best(progress: Progress, val: float, scores: dict[str, float], config: TrainConfig, total: int,
                 save_best: Callable[[], None]) -> dict:
    """Book one validation in `progress` (the loss, and ROUGE's `scores` when selecting by them); `save_best()` when
    it is the best so far by `config.select_by`, else count towards early stopping. Returns its log record."""
    progress.val_losses.append([progress.step, val])
    record = {"step": progress.step, "val_loss": val, **{f"val_{name}": f for name, f in scores.items()}}
    score = record[f"val_{config.select_by}"]
    if progress.best_score is None or (score < progress.best_score if config.select_by == "loss"
                                       else score > progress.best_score):
        progress.best_val_loss, progress.best_step, progress.best_score = val, progress.step, score
        progress.validations_since_best = 0
        save_best()
    else:
        progress.validations_since_best += 1
        progress.stopped_early = (0 < config.patience <= progress.validations_since_best
                                  and progress.step < total)  # stopped before the last step
    return record


def train(model, batches_for_epoch: Callable[[int], list[Batch]], config: TrainConfig, device: torch.device,
          folder: Path | None = None, val_batches: list[Batch] = (), resume: bool = False,
          fingerprint: dict | None = None, processes=ONE_PROCESS,
          on_step: Callable[[dict], None] | None = None,
          val_rouge: Callable[[nn.Module], dict[str, float]] | None = None) -> TrainResult:
    """Train `model` in place on `batches_for_epoch(epoch)` (deterministic per epoch, so a resume can skip ahead).

    `folder` receives checkpoints/, train_log.jsonl and best weights; None trains without writing anything.
    `on_step(record)` sees each step's log record as it is written (benchmarks time the steps with it).
    `val_rouge(model)`: the validation dialogues' ROUGE, {"rouge1": F, ...}, needed when `config.select_by` is one.
    """
    if config.select_by != "loss" and val_rouge is None:
        raise ValueError(f"--select-by {config.select_by} needs summaries of the validation dialogues: use it with "
                         "--mode full|lora")
    model.train()
    loss_sum = partial(token_loss_sum, precision=config.precision, device=device)
    forward = processes.wrap(model, loss_sum, device)  # the model on the device (FSDP: each process's shards)
    store = processes.checkpoints  # checkpoint.py's functions; under torchrun the same, as collectives
    batches, batches_epoch = batches_for_epoch(0), 0  # every epoch has as many batches as this one
    steps_per_epoch = math.ceil(len(batches) / config.grad_accum)
    total = config.max_steps or math.ceil(config.epochs * steps_per_epoch)
    optimizer = build_optimizer(model, config.optim, device)
    scheduler = build_scheduler(optimizer, config.optim, total)
    scaler = grad_scaler(config.precision, device)
    fingerprint = {**(fingerprint or {}), "total_steps": total, "grad_accum": config.grad_accum,
                   "processes": processes.world_size, "fsdp": processes.fsdp,
                   "trainable": {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad}}
    progress, saved = Progress(), None
    if resume:
        saved = store.latest_checkpoint(folder) if folder is not None else None
        if saved is None:
            raise ValueError(f"--resume: no checkpoint in {folder}/{ckpt.CHECKPOINT_DIR}; run without --resume")
        progress = Progress(**store.load_checkpoint(saved, model, optimizer, scheduler, scaler, fingerprint))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log = TrainLog(folder if processes.main else None, resume_step=progress.step)
    bar = tqdm(total=total, initial=progress.step, disable=not (config.progress_bar and processes.main), desc="training")
    with StopOnInterrupt() as stop:
        while progress.step < total and not progress.stopped_early and not stop.requested:
            tick = time.perf_counter()
            if batches_epoch != progress.epoch:
                batches, batches_epoch = batches_for_epoch(progress.epoch), progress.epoch
            micro = batches[progress.position:progress.position + config.grad_accum]
            lr = scheduler.get_last_lr()[0]
            try:
                loss, grad_norm, skipped = optimizer_step(forward, micro, optimizer, scheduler, scaler,
                                                          config.max_grad_norm, device, processes)
            except NonFiniteLoss as err:
                raise NonFiniteLoss(f"step {progress.step + 1}: {err}; training stopped before updating the weights. "
                                    f"Last good checkpoint: {saved or 'none yet'}. Try a lower --lr, or "
                                    f"--precision fp32") from None
            tokens = processes.total(sum(int(b["attention_mask"].sum()) + label_tokens(b) for b in micro))
            stop.requested = processes.any(stop.requested)  # Ctrl-C reaches processes at different moments
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
                val = validation_loss(model, val_batches, config.precision, device, forward, processes)
                scores = {}
                if config.select_by != "loss":
                    scores = val_rouge(model)
                    model.train()  # generating switched dropout off
                log.write(keep_if_best(progress, val, scores, config, total, lambda: store.save_best(folder, model)
                                       if folder is not None else None))
            progress.train_seconds += time.perf_counter() - tick
            if folder is not None and (last or stop.requested or progress.stopped_early or
                                       (config.save_every and progress.step % config.save_every == 0)):
                saved = store.save_checkpoint(folder, model, optimizer, scheduler, scaler, asdict(progress), fingerprint)
    bar.close()
    # Ctrl-C in the last step is an interruption too (the runner stops before its possibly long evaluation; a resume
    # finds nothing to train and evaluates). Every process must agree: one may have been told after the last `any`.
    interrupted = processes.any(stop.requested)
    peak = processes.max(peak_memory_mb(device))  # the largest process's: what must fit
    return TrainResult(progress, total, interrupted, saved, peak)


"""One training loop for full and LoRA fine-tuning: the steps `Seq2SeqTrainer` takes, written out.

What one optimiser step does, and what transformers 5.23's `Trainer` does for the same step:

1. Take the next `grad_accum` micro-batches of the epoch (fewer for the last step of an epoch, as the Trainer does).
2. Count the label tokens of *all* of them, N (`Trainer._get_num_items_in_batch`: `labels.ne(-100).sum()`).
3. For each micro-batch: forward under autocast, loss = (summed cross-entropy of its label tokens) / N, backward
   (train_loop/loss.py: the vocabulary projection runs on the label tokens only, not on padding).
   The gradients add up to the gradient of the mean loss per token over the whole step, exactly as if the
   micro-batches were one big batch. This is what the Trainer means to do: it passes `num_items_in_batch=N` into
   the model so the model's loss becomes sum / N, and then does *not* divide by `grad_accum`. But T5's forward
   takes `**kwargs` and ignores `num_items_in_batch` (its loss is `CrossEntropyLoss()`, a per-micro-batch mean),
   so the stock Trainer on T5 backpropagates, and logs, the *sum* of the micro-batch means: with accumulation 2
   the logged loss is about twice the true one (transformers issue 47688). With `grad_accum=1` both agree.
   tests/test_train_equivalence.py pins both facts: equal to the Trainer with accumulation 1, and equal to the
   Trainer with accumulation 2 once its loss really is sum / N (its `compute_loss_func` hook).
4. Clip the global gradient norm to `max_grad_norm` (`clip_grad_norm_`, the Trainer's `_clip_grad_norm`);
   the norm before clipping is logged. For fp16 the gradients are unscaled first.
5. `optimizer.step()`, then `scheduler.step()` (skipped, like the Trainer, when fp16's scaler skipped the step),
   then the gradients are dropped (`zero_grad(set_to_none=True)`).

The loss of a step stays on the device while micro-batches run; one host sync per optimiser step reads the loss
and the gradient norm together, checks that both are finite (before the weights change), and logs them.

On N processes (`torchrun`, train_loop/distributed.py) each process runs this same loop on its share of every
batch: N counts the label tokens of all shares, each process's loss is scaled by N so that DDP's gradient average
is the single-process gradient, the all-reduce waits for the last micro-batch of a step, the logged loss and
token counts are summed over processes, and only rank 0 writes the log and the checkpoints.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from train_loop import checkpoint as ckpt
from train_loop import dist_checkpoint
from train_loop.distributed import Parallel, plain
from train_loop.interrupt import StopOnInterrupt
from train_loop.log import TrainLog, peak_memory_mb
from train_loop.loss import token_loss_sum
from train_loop.optim import OptimConfig, build_optimizer, build_scheduler
from train_loop.precision import grad_scaler

Batch = dict[str, torch.Tensor]  # input_ids (B, S), attention_mask (B, S), labels (B, T) with -100 at padding


class NonFiniteLoss(ValueError):
    """The loss or the gradient norm became inf/NaN; the weights of that step were not updated."""


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
        for name in ("max_steps", "grad_accum"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value}: must be at least 1")
        for name in ("max_grad_norm", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 0")


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint, so a resumed run continues with the same numbers."""
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


def validation_loss(model, batches: list[Batch], precision: str, device: torch.device, forward=None,
                    parallel: Parallel = Parallel()) -> float:
    """Mean cross-entropy per label token over all validation batches (dropout off), and over every process's share.
    `forward(batch)` is a batch's summed loss: the wrapped loss module of `train` (distributed.py), by default
    `token_loss_sum` on `model`."""
    forward = forward or partial(token_loss_sum, model, precision=precision, device=device)
    model.eval()
    total, count = torch.zeros((), device=device), 0
    with torch.no_grad():
        for batch in batches:
            count += int((batch["labels"] != -100).sum())
            total += forward(to_device(batch, device))
    model.train()
    return parallel.sum(total).item() / max(1, parallel.total(count))


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def backward_micro_batches(forward, micro: list[Batch], optimizer, scaler, params, config: TrainConfig,
                           device: torch.device, parallel: Parallel = Parallel()) -> tuple[float, float]:
    """Steps 2-4 of the module docstring. Returns (loss per label token, gradient norm before clipping).

    `forward(batch)` is the micro-batch's summed loss (`token_loss_sum`, wrapped by `Parallel.wrap`). With N
    processes, `n_tokens` counts every process's tokens and the loss is scaled by N (distributed.py's docstring).
    """
    n_tokens = parallel.total(sum(int((b["labels"] != -100).sum()) for b in micro))  # CPU copies: no device sync
    step_loss = torch.zeros((), device=device)
    for i, batch in enumerate(micro):
        with parallel.gradient_sync(forward, enabled=i == len(micro) - 1):  # all-reduce in the last backward only
            loss = forward(to_device(batch, device)) / n_tokens
            scaler.scale(loss * parallel.world_size).backward()
        step_loss += loss.detach()
    parallel.sum(step_loss)  # this process's part of the step's loss -> the whole step's
    scaler.unscale_(optimizer)  # fp16: divide the gradients by the loss scale before clipping
    grad_norm = plain(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or math.inf))
    loss_value, norm_value = torch.stack([step_loss, grad_norm.to(step_loss)]).tolist()  # the step's one sync
    return loss_value, norm_value


def apply_update(optimizer, scheduler, scaler) -> bool:
    """Step 5 of the module docstring. True when fp16's scaler found inf/NaN gradients and skipped the step."""
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    skipped = scaler.get_scale() < scale  # the scaler backs off only after a skipped step
    if not skipped:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return skipped


def validate_and_keep_best(model, val_batches, progress: Progress, precision, device, folder, log, forward=None,
                           parallel: Parallel = Parallel()) -> None:
    val = validation_loss(model, val_batches, precision, device, forward, parallel)
    progress.val_losses.append([progress.step, val])
    log.write({"step": progress.step, "val_loss": val})
    if progress.best_val_loss is None or val < progress.best_val_loss:
        progress.best_val_loss, progress.best_step = val, progress.step
        if folder is not None:
            dist_checkpoint.save_best(parallel, folder, model)


def train(model, batches_for_epoch: Callable[[int], list[Batch]], config: TrainConfig, device: torch.device,
          folder: Path | None = None, val_batches: list[Batch] = (), resume: bool = False,
          fingerprint: dict | None = None, parallel: Parallel = Parallel()) -> TrainResult:
    """Train `model` in place on `batches_for_epoch(epoch)` (deterministic per epoch, so a resume can skip ahead).

    `folder` receives checkpoints/, train_log.jsonl and best weights; None trains without writing anything.
    With several processes (`parallel`), each passes its own share of the batches; rank 0 alone writes.
    """
    model.train()
    forward = parallel.wrap(model, partial(token_loss_sum, precision=config.precision, device=device), device)
    batches, batches_epoch = batches_for_epoch(0), 0  # every epoch has as many batches as this one
    steps_per_epoch = math.ceil(len(batches) / config.grad_accum)
    total = config.max_steps or math.ceil(config.epochs * steps_per_epoch)
    optimizer = build_optimizer(model, config.optim, device)
    scheduler = build_scheduler(optimizer, config.optim, total)
    scaler = grad_scaler(config.precision, device)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    fingerprint = {**(fingerprint or {}), "total_steps": total, "grad_accum": config.grad_accum,
                   "processes": parallel.world_size, "fsdp": parallel.fsdp,
                   "trainable": {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad}}
    progress, saved = Progress(), None
    if resume:
        saved = parallel.run_on_main(lambda: ckpt.latest_checkpoint(folder)) if folder is not None else None
        if saved is None:
            raise ValueError(f"--resume: no checkpoint in {folder}/{ckpt.CHECKPOINT_DIR}; run without --resume")
        progress = Progress(**dist_checkpoint.load_checkpoint(parallel, saved, model, optimizer, scheduler, scaler,
                                                              fingerprint))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log = TrainLog(folder if parallel.main else None, resume_step=progress.step)
    bar = tqdm(total=total, initial=progress.step, disable=not (config.progress_bar and parallel.main), desc="training")
    with StopOnInterrupt() as stop:
        while progress.step < total and not stop.requested:
            tick = time.perf_counter()
            if batches_epoch != progress.epoch:
                batches, batches_epoch = batches_for_epoch(progress.epoch), progress.epoch
            micro = batches[progress.position:progress.position + config.grad_accum]
            lr = scheduler.get_last_lr()[0]
            loss, grad_norm = backward_micro_batches(forward, micro, optimizer, scaler, params, config, device, parallel)
            if config.precision != "fp16" and not (math.isfinite(loss) and math.isfinite(grad_norm)):
                raise NonFiniteLoss(
                    f"step {progress.step + 1}: the loss is {loss} (gradient norm {grad_norm}); training stopped "
                    f"before updating the weights. Last good checkpoint: {saved or 'none yet'}. Try a lower --lr, "
                    f"or --precision fp32")
            skipped = apply_update(optimizer, scheduler, scaler)
            stop.requested = parallel.any(stop.requested)  # Ctrl-C reaches processes at different moments

            tokens = parallel.total(sum(int(b["attention_mask"].sum() + (b["labels"] != -100).sum()) for b in micro))
            progress.step, progress.position = progress.step + 1, progress.position + len(micro)
            progress.tokens, progress.skipped_steps = progress.tokens + tokens, progress.skipped_steps + skipped
            progress.losses.append(loss)
            epoch_end = progress.position >= len(batches)
            if epoch_end:
                progress.epoch, progress.position = progress.epoch + 1, 0
            seconds = time.perf_counter() - tick
            log.write({"step": progress.step, "epoch": round(progress.step / steps_per_epoch, 4), "loss": loss,
                       "lr": lr, "grad_norm": grad_norm, "tokens": tokens, "tokens_per_s": tokens / seconds,
                       "peak_memory_mb": peak_memory_mb(device), **({"skipped": True} if skipped else {})})
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens / seconds:.0f}")
            bar.update(1)

            last = progress.step == total
            if val_batches and (epoch_end or last or (config.eval_every and progress.step % config.eval_every == 0)):
                validate_and_keep_best(model, val_batches, progress, config.precision, device, folder, log, forward,
                                       parallel)
            progress.train_seconds += time.perf_counter() - tick
            if folder is not None and (last or stop.requested or (config.save_every and progress.step % config.save_every == 0)):
                saved = dist_checkpoint.save_checkpoint(parallel, folder, model, optimizer, scheduler, scaler,
                                                        asdict(progress), fingerprint)
    bar.close()
    return TrainResult(progress, total, stop.requested and progress.step < total, saved,
                       parallel.max(peak_memory_mb(device)))  # the largest process's: what must fit

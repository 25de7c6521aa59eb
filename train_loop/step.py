"""One optimiser step, and the loss it minimises: the mean cross-entropy per label token.

What one step does, and what transformers 5.23's `Trainer` does for the same step:

1. Take the step's `grad_accum` micro-batches and count the label tokens of *all* of them, N
   (`Trainer._get_num_items_in_batch`: `labels.ne(-100).sum()`).
2. For each micro-batch: forward under autocast (precision.py), loss = (summed cross-entropy of its label tokens)
   / N, backward. The gradients add up to the gradient of the mean loss per token over the whole step, exactly as
   if the micro-batches were one big batch. The Trainer means to do this: it passes `num_items_in_batch=N` into
   the model and does *not* divide by `grad_accum`. But T5's forward ignores `num_items_in_batch` (its loss is
   `CrossEntropyLoss()`, a per-micro-batch mean), so the stock Trainer on T5 backpropagates, and logs, the *sum*
   of the micro-batch means: with accumulation 2 about twice the true loss (transformers issue 47688).
   tests/test_train_equivalence.py pins both facts.
3. Clip the global gradient norm (`clip_grad_norm_`, the Trainer's `_clip_grad_norm`); the norm before clipping
   is returned. For fp16 the gradients are unscaled first.
4. `optimizer.step()` (AdamW, optim.py), then `scheduler.step()` (skipped, like the Trainer, when fp16's scaler
   skipped the step), then the gradients are dropped.

The loss and the gradient norm are read together, once per step (one host sync), and checked to be finite
before the weights change. (On a GPU, `token_loss_sum` also waits once per micro-batch, in `nonzero()`, before
that micro-batch's work is queued.)

The loss: `model(...).logits` would project *every* decoder position onto the 32,128 words of the vocabulary,
padding included, and upcast all of it to fp32 before the loss throws the padded rows away. `token_loss_sum`
runs the same encoder and decoder as `T5ForConditionalGeneration.forward` (transformers 5.23), picks the decoder
states of the label tokens, and projects only those: the same loss and gradients (tests/test_loss.py), no work
for padding.

`ddp` is None for one process. Under torchrun it is the process's `distributed.Parallel`, and the four `if ddp:`
lines below are all that several processes add (distributed.py explains the math of each).
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from train_loop.data import IGNORE_INDEX
from train_loop.precision import autocast

Batch = dict[str, torch.Tensor]  # input_ids (B, S), attention_mask (B, S), labels (B, T) with IGNORE_INDEX at padding


class NonFiniteLoss(ValueError):
    """The loss or the gradient norm became inf/NaN; the weights of that step were not updated."""


def decoder_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   decoder_input_ids: torch.Tensor) -> torch.Tensor:
    """The last decoder layer's output, as the model would pass it to `lm_head`. Shape: (B, T, d_model)."""
    encoded = model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, S, d)
    hidden = model.decoder(input_ids=decoder_input_ids, encoder_hidden_states=encoded,
                           encoder_attention_mask=attention_mask).last_hidden_state  # (B, T, d)
    if model.config.scale_decoder_outputs:  # a tied head (not FLAN-T5's): times d_model**-0.5, as T5 does
        hidden = hidden * model.config.d_model**-0.5
    return hidden


def token_loss_sum(model, batch: Batch, precision: str, device: torch.device) -> torch.Tensor:
    """Summed cross-entropy over the label tokens of one micro-batch, in fp32. Shape: () ."""
    labels = batch["labels"].flatten()                                        # (B*T,), IGNORE_INDEX at padding
    rows = (labels != IGNORE_INDEX).nonzero().squeeze(1)                      # (N,) where the label tokens are
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(batch["labels"])  # (B, T): [pad, y1, ..., y_T-1]
    with autocast(precision, device):
        hidden = decoder_states(model, batch["input_ids"], batch["attention_mask"], decoder_input_ids)  # (B, T, d)
        logits = model.lm_head(hidden.flatten(0, 1)[rows])                   # (N, V)
    return F.cross_entropy(logits.float(), labels[rows], reduction="sum")    # fp32 log-softmax over V


def label_tokens(batch: Batch) -> int:
    return int((batch["labels"] != IGNORE_INDEX).sum())


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def optimizer_step(forward, micro: list[Batch], optimizer, scheduler, scaler, max_grad_norm: float,
                   device: torch.device, ddp=None) -> tuple[float, float, bool]:
    """Steps 1-4 above; `forward(batch)` is a micro-batch's `token_loss_sum`. Returns (loss per label token,
    gradient norm before clipping, whether fp16's scaler skipped the update)."""
    n_tokens = sum(label_tokens(b) for b in micro)                  # CPU tensors: no device sync
    if ddp:
        n_tokens = ddp.total(n_tokens)                              # every process's tokens
    step_loss = torch.zeros((), device=device)
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1
        with ddp.gradient_sync(forward, enabled=last) if ddp else nullcontext():  # all-reduce once, at the end
            loss = forward(to_device(batch, device)) / n_tokens     # this micro-batch's part of the step's mean
            scaler.scale(loss * (ddp.world_size if ddp else 1)).backward()
        step_loss += loss.detach()
    if ddp:
        ddp.sum(step_loss)                                          # this process's part -> the whole step's
    scaler.unscale_(optimizer)                                      # fp16: undo the loss scale before clipping
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm or math.inf)
    if ddp:
        grad_norm = ddp.plain(grad_norm)                            # FSDP: a DTensor -> a plain tensor
    loss_value, norm_value = torch.stack([step_loss, grad_norm.to(step_loss)]).tolist()  # the step's one sync
    if not scaler.is_enabled() and not (math.isfinite(loss_value) and math.isfinite(norm_value)):
        raise NonFiniteLoss(f"the loss is {loss_value} (gradient norm {norm_value})")
    return loss_value, norm_value, apply_update(optimizer, scheduler, scaler)


def apply_update(optimizer, scheduler, scaler) -> bool:
    """Step 4. True when fp16's scaler found inf/NaN gradients and skipped the update."""
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    skipped = scaler.get_scale() < scale  # the scaler backs off only after a skipped step
    if not skipped:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return skipped

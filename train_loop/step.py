"""One optimiser step, the loss it minimises (mean cross-entropy per label token), and the AdamW + schedule it
steps, each as transformers 5.23's `Seq2SeqTrainer` does it, so tests/test_train_equivalence.py can compare:

1. Count the label tokens of *all* the step's `grad_accum` micro-batches, N (`Trainer._get_num_items_in_batch`).
2. Per micro-batch: forward under autocast (model/device.py), loss = (summed cross-entropy of its label tokens) / N,
   backward. The gradients add up to those of the mean loss per token over the whole step, as if the micro-batches
   were one batch. (The stock Trainer on T5 does not: T5's forward ignores `num_items_in_batch` and returns a
   per-micro-batch mean, so with accumulation 2 it backpropagates about twice the true loss; transformers 47688.)
3. Clip the global gradient norm (`clip_grad_norm_`); the norm before clipping is returned. fp16 unscales first.
4. `optimizer.step()`, then `scheduler.step()` (skipped, like the Trainer, when fp16's scaler skipped the step).
The loss and the gradient norm are read together, once per step, and checked to be finite before the weights change.

`token_loss_sum` runs T5's encoder and decoder as `T5ForConditionalGeneration.forward` does, but projects only the
label tokens' decoder states onto the 32,128-word vocabulary, not the padding: the same loss and gradients
(tests/test_loss.py). Other seq2seq models (BART, Pegasus) sum the cross-entropy of their own forward's logits.

AdamW (`Trainer.create_optimizer`), decoupled (Loshchilov & Hutter 2019): weight decay for every trainable parameter
but biases and normalisation weights (`Trainer.get_decay_parameter_names`); frozen parameters get no optimiser
state (in LoRA all but A and B). Or T5's own optimiser, Adafactor (Shazeer & Stern 2018; transformers' `Adafactor`,
`optim="adafactor"` in the Trainer), which pretraining uses: its step is relative to each weight matrix's RMS, so
T5's embeddings (std 1) and its query weights (std (d_model d_kv)^-1/2, ~0.009 in the baby model) change by the same
share per step; AdamW moves both by ~lr, 100 times more of q than of the embedding (docs/pretraining.md). The
schedule is `get_linear_schedule_with_warmup` (0 up to the peak over the warmup steps, then linearly down to 0) or
its cosine twin, stepped once per optimiser step.

`processes` is loop.py's `OneProcess` (every collective the identity) or, under torchrun, distributed.py's
`Parallel`: its `total`, `gradient_sync`, `sum` and `plain` and the loss times `world_size` are all that several
processes add.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from train_loop.data import IGNORE_INDEX
from model.device import autocast

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
    if model.config.model_type != "t5":  # decoder_states re-does T5's forward only
        return forward_loss_sum(model, batch, precision, device)
    labels = batch["labels"].flatten()                                        # (B*T,), IGNORE_INDEX at padding
    rows = (labels != IGNORE_INDEX).nonzero().squeeze(1)                      # (N,) where the label tokens are
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(batch["labels"])  # (B, T): [pad, y1, ..., y_T-1]
    with autocast(precision, device):
        hidden = decoder_states(model, batch["input_ids"], batch["attention_mask"], decoder_input_ids)  # (B, T, d)
        logits = model.lm_head(hidden.flatten(0, 1)[rows])                   # (N, V)
    return F.cross_entropy(logits.float(), labels[rows], reduction="sum")    # fp32 log-softmax over V


def forward_loss_sum(model, batch: Batch, precision: str, device: torch.device) -> torch.Tensor:
    """Any `AutoModelForSeq2SeqLM`: its own forward builds the decoder's input from `labels` (shifted right) and
    returns the logits of every label position; their summed cross-entropy, not the model's mean over them. Shape: ()."""
    with autocast(precision, device):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       labels=batch["labels"]).logits                          # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(),  # (B*T, V), (B*T,)
                           ignore_index=IGNORE_INDEX, reduction="sum")


def label_tokens(batch: Batch) -> int:
    return int((batch["labels"] != IGNORE_INDEX).sum())


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def optimizer_step(forward, micro: list[Batch], optimizer, scheduler, scaler, max_grad_norm: float,
                   device: torch.device, processes) -> tuple[float, float, bool]:
    """Steps 1-4 above; `forward(batch)` is a micro-batch's `token_loss_sum`. Returns (loss per label token,
    gradient norm before clipping, whether fp16's scaler skipped the update)."""
    n_tokens = processes.total(sum(label_tokens(b) for b in micro))  # every process's tokens (CPU ints: no sync)
    step_loss = torch.zeros((), device=device)
    for i, batch in enumerate(micro):
        with processes.gradient_sync(forward, enabled=i == len(micro) - 1):  # all-reduce once, at the end
            loss = forward(to_device(batch, device)) / n_tokens     # this micro-batch's part of the step's mean
            scaler.scale(loss * processes.world_size).backward()  # DDP averages over N: distributed.py
        step_loss += loss.detach()
    processes.sum(step_loss)                                        # this process's part -> the whole step's
    scaler.unscale_(optimizer)                                      # fp16: undo the loss scale before clipping
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = processes.plain(torch.nn.utils.clip_grad_norm_(params, max_grad_norm or math.inf))  # FSDP: DTensor
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


# ---- AdamW and its schedule ------------------------------------------------------------------------------------

# Trainer.get_decay_parameter_names, transformers 5.23 (matched on the lower-cased full parameter name).
NO_DECAY_PATTERNS = (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
SCHEDULES = ("linear", "cosine")
OPTIMIZERS = ("adamw", "adafactor")


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "linear"
    loraplus_lr_ratio: float | None = None  # LoRA+: B's rate this many times A's (lora/loraplus.py)
    optimizer: str = "adamw"                # or "adafactor": steps relative to each parameter's RMS

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"--lr {self.lr}: the learning rate must be positive")
        if self.weight_decay < 0:
            raise ValueError(f"--weight-decay {self.weight_decay}: must be >= 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"--adam-beta1/--adam-beta2 {self.betas}: each must be in [0, 1)")
        if not self.eps > 0:
            raise ValueError(f"--adam-eps {self.eps}: must be positive")
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup-steps {self.warmup_steps}: must be >= 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--lr-schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.optimizer == "adafactor" and self.loraplus_lr_ratio is not None:
            raise ValueError("--loraplus-lr-ratio sets AdamW's rates per group: use it with --optimizer adamw")
        if self.loraplus_lr_ratio is not None and not self.loraplus_lr_ratio > 0:
            raise ValueError(f"--loraplus-lr-ratio {self.loraplus_lr_ratio}: lambda = lr_B / lr_A must be positive "
                             "(the LoRA+ paper uses 16; 1 is plain LoRA)")


def decays(model: nn.Module, name: str) -> bool:
    owner = model.get_submodule(name.rpartition(".")[0])
    if isinstance(owner, nn.LayerNorm):
        return False
    return not any(re.search(pattern, name.lower()) for pattern in NO_DECAY_PATTERNS)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into [with decay, without decay]; frozen ones are left out."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in trainable if decays(model, n)], "weight_decay": weight_decay},
        {"params": [p for n, p in trainable if not decays(model, n)], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW as one fused kernel (the Trainer's default, `adamw_torch_fused`): one pass over each parameter,
    gradient and moment; on flan-t5-small, one CPU thread, 0.15 s an update against 0.8 s `foreach` (bench/RESULTS.md).
    With `loraplus_lr_ratio`, LoRA+'s groups instead (lora/loraplus.py, peft's `create_loraplus_optimizer`).
    With `optimizer="adafactor"`, transformers' Adafactor as T5 was pretrained with it: `lr` times the parameter's
    RMS (scale_parameter), no momentum, the update clipped to RMS 1; the schedule below still sets `lr`."""
    if config.loraplus_lr_ratio is not None:
        from lora.loraplus import loraplus_groups

        groups = loraplus_groups(model, config.lr, config.loraplus_lr_ratio, config.weight_decay)
    else:
        groups = parameter_groups(model, config.weight_decay)
    if not any(group["params"] for group in groups):
        raise ValueError("the model has no trainable parameters (did LoRA injection freeze everything?)")
    if config.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=config.lr, scale_parameter=True, relative_step=False, warmup_init=False)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=True)


def lr_factor(step: int, warmup: int, total: int, schedule: str = "linear") -> float:
    """The multiplier of the peak lr used by optimiser step `step` (0-based), as transformers' schedules define it."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return max(0.0, (total - step) / max(1, total - warmup))


def build_scheduler(optimizer, config: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup, schedule = config.warmup_steps, config.schedule
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total_steps, schedule))

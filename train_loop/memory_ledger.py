"""Where a training run's memory goes: weights, gradients, optimiser state, and the rest.

Fine-tuning holds four kinds of memory at its peak:

* **weights**: every parameter (and buffer), trainable or frozen: LoRA still holds the whole base model;
* **gradients**: one tensor per *trainable* parameter, of its dtype (full: the whole model; LoRA: A and B);
* **optimiser state**: AdamW keeps two moments per trainable parameter (exp_avg, exp_avg_sq, each of the
  parameter's dtype: fp32 here, so 8 bytes per trainable parameter) plus one step count per tensor;
* **the rest**: activations saved for the backward pass and temporary workspace (and, on CPU, the interpreter,
  the libraries and the data). Backpropagation into A and B still runs through every layer above them, so LoRA
  keeps nearly all the activations of full fine-tuning: its memory saving is the gradients and the optimiser
  state of the frozen weights, which is why it is smaller than the ratio of trainable parameters.

The first three are *computed*: from the parameters, from the gradients present after an optimiser step, and
from the optimiser's actual `state`. The peak is *measured*: on CUDA by `torch.cuda.max_memory_allocated` (the
tensors torch allocated; the caching allocator's reserve is reported beside it), on CPU by the process's peak
resident set size (Linux `VmHWM`, reset at the start with `/proc/self/clear_refs`). "rest" is the peak minus the
three computed parts. With `zero_grad(set_to_none=True)` the gradients exist only from the backward pass to the
end of the step, so the moment of the peak may hold fewer than all of them: rest is then an underestimate.

`MemoryLedger` watches a training run without changing it: `torch.optim`'s global step hook
(`register_optimizer_step_post_hook`) shows it the optimiser and the gradients right after each `step()`.
"""
from __future__ import annotations

import re
import resource
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch import nn

PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def tensor_bytes(t: torch.Tensor) -> int:
    """numel x element size of this process's part (a sharded FSDP tensor counts its local shard)."""
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def weight_bytes(model: nn.Module) -> int:
    """Every parameter and buffer once (shared tensors, such as T5's tied embeddings, count once)."""
    return sum(tensor_bytes(p) for p in model.parameters()) + sum(tensor_bytes(b) for b in model.buffers())


def expected_gradient_bytes(model: nn.Module) -> int:
    """One gradient per trainable parameter, in the parameter's dtype."""
    return sum(tensor_bytes(p) for p in model.parameters() if p.requires_grad)


def gradient_bytes(optimizer: torch.optim.Optimizer) -> int:
    """The gradients present now on the optimiser's parameters."""
    return sum(tensor_bytes(p.grad) for g in optimizer.param_groups for p in g["params"] if p.grad is not None)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Every tensor in the optimiser's state (AdamW: exp_avg, exp_avg_sq and a step count per parameter)."""
    return sum(tensor_bytes(v) for state in optimizer.state.values() for v in state.values()
               if isinstance(v, torch.Tensor))


def cpu_peak_bytes() -> int:
    """The process's peak resident set size: Linux VmHWM, else getrusage's ru_maxrss (KiB on Linux)."""
    if PROC_STATUS.is_file():
        match = re.search(r"VmHWM:\s+(\d+) kB", PROC_STATUS.read_text())
        if match:
            return int(match.group(1)) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_current_bytes() -> int:
    if PROC_STATUS.is_file():
        match = re.search(r"VmRSS:\s+(\d+) kB", PROC_STATUS.read_text())
        if match:
            return int(match.group(1)) * 1024
    return cpu_peak_bytes()


def reset_cpu_peak() -> bool:
    """Start VmHWM again from the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        PROC_CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class MemoryLedger:
    """`with MemoryLedger(model, device) as ledger: train(...)`, then `ledger.result()` (bytes, JSON-ready)."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.model, self.device = model, device
        self.optimizer_bytes = self.gradient_bytes = 0
        self.steps_seen, self.peak_reset = 0, False

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.steps_seen += 1
        self.optimizer_bytes = max(self.optimizer_bytes, optimizer_state_bytes(optimizer))
        self.gradient_bytes = max(self.gradient_bytes, gradient_bytes(optimizer))

    def __enter__(self) -> "MemoryLedger":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            self.peak_reset = reset_cpu_peak()
            self.before = cpu_current_bytes()
        self.hook = register_optimizer_step_post_hook(self._after_step)
        return self

    def __exit__(self, *exc) -> None:
        self.hook.remove()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            self.reserved = torch.cuda.max_memory_reserved(self.device)
        else:
            self.peak, self.reserved = cpu_peak_bytes(), None

    def result(self) -> dict:
        weights = weight_bytes(self.model)
        gradients = self.gradient_bytes or expected_gradient_bytes(self.model)
        computed = weights + gradients + self.optimizer_bytes
        cuda = self.device.type == "cuda"
        params = list(self.model.parameters())
        return {
            "weights_bytes": weights, "gradients_bytes": gradients, "optimizer_state_bytes": self.optimizer_bytes,
            "rest_bytes": self.peak - computed, "peak_bytes": self.peak, "before_training_bytes": self.before,
            **({"peak_reserved_bytes": self.reserved} if cuda else {}),
            "trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "total_params": sum(p.numel() for p in params),
            "computed": "weights, gradients and optimiser state: numel x element size of the parameters, of the "
                        "gradients after a step and of the optimiser's state",
            "measured": ("peak: torch.cuda.max_memory_allocated over the training steps" if cuda else
                         "peak: the process's peak resident set size (VmHWM) over the training steps"
                         + ("" if self.peak_reset else ", since the process started (could not reset it)")
                         + "; rest includes the interpreter, libraries and data (before_training_bytes - "
                           "weights_bytes of it were there before the first step)"),
        }

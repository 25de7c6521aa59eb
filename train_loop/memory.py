"""Where a training run's memory goes: the ledger in every training run's metrics.json.

Weights (LoRA still holds the whole base model), gradients and AdamW's two moments (per *trainable*
parameter) are *computed* from the tensors after each optimiser step; the peak is *measured* (CUDA
`max_memory_allocated`; CPU the peak resident set, Linux VmHWM); "rest" (activations, workspace) is the peak minus
the three (an underestimate when gradients, set to None each step, are not all alive at the peak). Backpropagation
into A and B still runs through every layer, so LoRA saves the frozen weights' gradients and optimiser state, not
their activations: less than the ratio of trainable parameters.
"""
from __future__ import annotations

import re
import resource
from pathlib import Path

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def tensor_bytes(t: torch.Tensor) -> int:
    """numel x element size of this process's part (a sharded FSDP tensor counts its local shard)."""
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def weight_bytes(model: nn.Module) -> int:  # shared tensors (T5's tied embeddings) count once
    return sum(tensor_bytes(p) for p in model.parameters()) + sum(tensor_bytes(b) for b in model.buffers())


def gradient_bytes(optimizer: torch.optim.Optimizer) -> int:  # the gradients present now
    return sum(tensor_bytes(p.grad) for g in optimizer.param_groups for p in g["params"] if p.grad is not None)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:  # AdamW: exp_avg, exp_avg_sq, step
    return sum(tensor_bytes(v) for state in optimizer.state.values() for v in state.values()
               if isinstance(v, torch.Tensor))


def cpu_bytes(field: str = "VmHWM") -> int:
    """The process's peak (VmHWM) or current (VmRSS) resident set from Linux's /proc, else getrusage's peak (KiB)."""
    match = PROC_STATUS.is_file() and re.search(rf"{field}:\s+(\d+) kB", PROC_STATUS.read_text())
    return int(match.group(1)) * 1024 if match else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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
        self.peak_reset = False

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.optimizer_bytes = max(self.optimizer_bytes, optimizer_state_bytes(optimizer))
        self.gradient_bytes = max(self.gradient_bytes, gradient_bytes(optimizer))

    def __enter__(self) -> "MemoryLedger":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            self.peak_reset = reset_cpu_peak()
            self.before = cpu_bytes("VmRSS")
        self.hook = register_optimizer_step_post_hook(self._after_step)
        return self

    def __exit__(self, *exc) -> None:
        self.hook.remove()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            self.reserved = torch.cuda.max_memory_reserved(self.device)
        else:
            self.peak, self.reserved = cpu_bytes(), None

    def result(self) -> dict:
        weights = weight_bytes(self.model)
        gradients = self.gradient_bytes or sum(tensor_bytes(p) for p in self.model.parameters() if p.requires_grad)
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

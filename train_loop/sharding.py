"""The model on several processes: a whole copy on each (DDP), or with `--fsdp` sharded over them (FSDP2).

`wrap` gives the loop the module it calls for a micro-batch's loss. DDP and FSDP act on the wrapped module's
forward, so wrapping the loss (`LossOf`) rather than the model lets the loss call any part of the model (encoder,
decoder, head) and still be seen by them. DistributedDataParallel (Li et al. 2020, arXiv:2006.15704) copies rank
0's weights to every process when it wraps, and all-reduces (averages) the gradients during backward.

`--fsdp`: shard the model over the processes (FSDP2, `torch.distributed.fsdp.fully_shard`) when it does not fit one.

DDP keeps a whole copy of the weights, their gradients and AdamW's two moments on every device: 16 bytes per
trainable parameter (fp32), about 12 GB for flan-t5-large's 783M parameters before any activation. Fully sharded
data parallel (Zhao et al. 2023, "PyTorch FSDP", arXiv:2304.11277; ZeRO-3, Rajbhandari et al. 2020) keeps only
1/N of each on every process, and gathers one unit's weights just before that unit runs:

* Each T5 block (`encoder.block.i`, `decoder.block.i`) is one unit: `fully_shard(block)` replaces its parameters by
  DTensors holding a 1/N slice (dim 0) and adds hooks that all-gather the whole block before its forward and
  backward and free it after. What is left (embeddings, `lm_head`, final norms) is the root unit, sharded by
  `fully_shard` on the loss module that wraps the model (`LossOf`), so that the root's weights are
  gathered whenever the loss is computed, however the loss reaches into the model.
* Backward reduce-scatters each gradient: every process keeps the averaged gradient of its slice only, and AdamW
  (built after sharding) steps on the slices: the optimiser state is sharded too.
* LoRA works unchanged: a unit may hold frozen and trainable parameters side by side (FSDP2 shards per parameter).

The loop sees the same parameter names (DTensors in place of tensors): clipping works on DTensors, and the
checkpoints gather full tensors (dist_checkpoint.py). Evaluation runs on an unsharded model built afresh
(modes/train.py): generation calls the encoder and decoder on its own schedule and lengths differ by process.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.nn.parallel import DistributedDataParallel


class LossOf(nn.Module):
    """`forward(batch)` is `loss_sum(model, batch)`: the loss as a module, for DDP and FSDP to wrap."""

    def __init__(self, model: nn.Module, loss_sum):
        super().__init__()
        self.model, self.loss_sum = model, loss_sum

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss_sum(self.model, batch)


def wrap(model: nn.Module, loss_sum, device: torch.device, fsdp: bool) -> nn.Module:
    """`LossOf(model, loss_sum)` under FSDP (which moves each process's shards to the device, not the whole
    model) or under DDP."""
    module = LossOf(model, loss_sum)
    if fsdp:
        return shard(module, model, device)
    model.to(device)
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The T5 blocks: the units FSDP gathers one at a time."""
    blocks = [block for stack in ("encoder", "decoder") for block in getattr(model, stack).block]
    if not blocks:
        raise ValueError("--fsdp: the model has no encoder/decoder blocks to shard (expected a T5 model)")
    return blocks


def shard(loss_module: nn.Module, model: nn.Module, device: torch.device) -> nn.Module:
    """Shard every T5 block of `model`, then the rest through `loss_module` (the root); returns the root."""
    # T5 blocks return position_bias, a view, beside hidden_states; FSDP2 warns that an in-place op on such a view
    # would skip its backward hook. T5 never modifies it in place; tests/test_distributed.py checks that FSDP's
    # gradients are the single-process ones.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPT5Block\) returned a view tensor")
    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh)
    return fully_shard(loss_module, mesh=mesh)


@contextmanager
def no_gradient_sync(root: FSDPModule):
    """Accumulation micro-steps: keep the unsharded gradients locally, reduce-scatter only after the last one."""
    root.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        root.set_requires_gradient_sync(True)


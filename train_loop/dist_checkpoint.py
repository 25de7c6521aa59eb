"""Checkpoints when N processes train one model: every process helps gather, rank 0 writes, rank 0 reads and sends.

The file is checkpoint.py's (same keys, same atomic write, same fingerprint check), with two differences:

* weights and AdamW state are whole tensors keyed by parameter name, from `torch.distributed.checkpoint`'s
  `get_model_state_dict` / `get_optimizer_state_dict` with `full_state_dict=True`. Under FSDP each process holds
  slices and gathering them is a collective every process joins; under DDP every process already holds it all.
  Either way the file is the same, whatever the sharding.
* "rng" holds every process's RNG states (each draws its own dropout masks): process r restores entry r.

Only rank 0 touches the disk: on --resume it reads the file and `set_*_state_dict(broadcast_from_rank0=True)`
sends every process its part, so the output folder need not be shared between machines. A checkpoint written by
N processes resumes on N processes only (the fingerprint holds N): the data shares and the RNG states depend on it.
Every method here is a collective: all processes call it at the same point.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)

from train_loop import checkpoint as ckpt
from train_loop.distributed import Parallel
from train_loop.resume import read_checkpoint, set_rng_state

GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)  # whole, on rank 0's CPU
SEND = StateDictOptions(full_state_dict=True, cpu_offload=True, broadcast_from_rank0=True, strict=False)


def trainable_weights(model) -> dict[str, torch.Tensor]:
    """Whole trainable weights on rank 0 (empty elsewhere). `ignore_frozen_params` keeps the tied embedding
    (shared with `encoder/decoder.embed_tokens`) even when it is frozen: the name filter drops it."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {name: t for name, t in get_model_state_dict(model, options=GATHER).items() if name in names}


class Checkpoints:
    """checkpoint.py's `latest_checkpoint`, `save_checkpoint`, `load_checkpoint`, `save_best` and `load_best`, with
    the same arguments, for N processes: the loop calls these through `Parallel.checkpoints`."""

    def __init__(self, par: Parallel):
        self.par = par

    def latest_checkpoint(self, folder: Path) -> Path | None:
        return self.par.run_on_main(lambda: ckpt.latest_checkpoint(folder))

    def save_checkpoint(self, folder: Path, model, optimizer, scheduler, scaler, progress: dict,
                        fingerprint: dict) -> Path:
        par = self.par
        state = {"weights": trainable_weights(model),
                 "optimizer": get_optimizer_state_dict(model, optimizer, options=GATHER), "rng": par.gather(ckpt.rng_state())}
        return par.run_on_main(lambda: ckpt.write_checkpoint(folder, {
            **state, "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "progress": progress,
            "fingerprint": fingerprint}))

    def load_checkpoint(self, path: Path, model, optimizer, scheduler, scaler, fingerprint: dict) -> dict:
        """Restore the live objects of every process from rank 0's file; return the progress record."""
        par, state = self.par, {}  # the whole checkpoint, on rank 0 only

        def read() -> dict:  # rank 0; the small parts go to every process by pickle, the tensors below by broadcast
            state.update(read_checkpoint(path, fingerprint))
            return {key: state[key] for key in ("scheduler", "scaler", "progress", "rng")}

        small = par.run_on_main(read)
        set_model_state_dict(model, state.get("weights", {}), options=SEND)
        set_optimizer_state_dict(model, optimizer, state.get("optimizer", {}), options=SEND)
        scheduler.load_state_dict(small["scheduler"])
        scaler.load_state_dict(small["scaler"])
        set_rng_state(small["rng"][par.rank])
        return small["progress"]

    def save_best(self, folder: Path, model) -> None:
        weights = trainable_weights(model)
        self.par.run_on_main(lambda: ckpt.write_best(folder, weights))

    def load_best(self, folder: Path, model) -> bool:
        """Rank 0 reads the best weights and sends them to every process (a model that is not sharded)."""
        path = ckpt.best_path(folder)
        if not self.par.run_on_main(path.is_file):
            return False
        send_weights(model, torch.load(path, map_location="cpu", weights_only=True) if self.par.main else {})
        return True


def send_weights(model, weights: dict[str, torch.Tensor]) -> None:
    """Rank 0's `weights` (some of the model's, by name) into `model` on every process."""
    set_model_state_dict(model, weights, options=SEND)


def unsharded(model, build) -> nn.Module:
    """A fresh, whole model from `build()` holding the sharded `model`'s trained weights, on every process."""
    weights = trainable_weights(model)
    fresh = build()
    send_weights(fresh, weights)
    return fresh

"""The training state on disk: written atomically, found again after a crash, refused when it belongs to another run;
and the run folder it lives in, prepared before training starts.

A checkpoint, `checkpoints/step-00000040.pt`, holds everything the next optimiser step depends on: the trainable
weights (in LoRA mode only A and B: the frozen base is rebuilt from `--model`/`--seed`), the AdamW moments, the
scheduler's step, the GradScaler's scale, the RNG states (a resume draws the dropout masks the uninterrupted run
would have), the position in the data, the history, and the run's fingerprint (flat keys, "train.optim.lr": a
mismatch names the setting).

Atomic: written as `*.pt.tmp`, fsynced, then renamed over its name with `os.replace` (atomic in POSIX): a process
killed mid-write leaves at worst a `.tmp` that `latest_checkpoint` ignores. The two newest are kept, each with a
sidecar `step-00000040.pt.sha256` in `sha256sum`'s format, written before the rename, that resume.py
checks on --resume. Several processes write the same file through dist_checkpoint.py.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
from pathlib import Path

import torch
from torch import nn

from eval.evaluate import prepare_output_dir

CHECKPOINT_DIR = "checkpoints"
BEST_FILE = "best.pt"
NAME = re.compile(r"^step-(\d{8})\.pt$")
KEEP = 2  # checkpoints kept: the newest, and the one --resume falls back to when the newest is damaged


class HashingWriter:
    """A file that also feeds every byte written to SHA-256: the checksum costs no second read of the file."""

    def __init__(self, f):
        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_atomic(obj, path: Path, with_checksum: bool = False) -> None:
    """torch.save so a reader sees the old file or the whole new one; the SHA-256 sidecar appears before `path`."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        writer = HashingWriter(f)
        torch.save(obj, writer)
        f.flush()
        os.fsync(f.fileno())
    if with_checksum:
        sidecar = checksum_path(path)
        sidecar.with_name(sidecar.name + ".tmp").write_text(f"{writer.sha256.hexdigest()}  {path.name}\n")
        os.replace(sidecar.with_name(sidecar.name + ".tmp"), sidecar)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def rng_state() -> dict:
    """The generators this process draws from: Python's, the CPU's and, on CUDA, its own device's only (under
    torchrun each process has its device, distributed.py; a resume may see fewer GPUs than the save did)."""
    cuda = torch.cuda.get_rng_state(torch.cuda.current_device()) if torch.cuda.is_available() else None
    return {"python": random.getstate(), "torch": torch.get_rng_state(), "cuda": cuda}


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def latest_checkpoint(folder: Path) -> Path | None:
    """The complete checkpoint with the highest step; half-written `.tmp` files are not candidates."""
    found = [(int(m.group(1)), p) for p in (folder / CHECKPOINT_DIR).glob("step-*.pt") if (m := NAME.match(p.name))]
    return max(found)[1] if found else None


def save_checkpoint(folder: Path, model, optimizer, scheduler, scaler, progress: dict, fingerprint: dict) -> Path:
    """Write the state after optimiser step `progress['step']`, then delete the older checkpoints."""
    return write_checkpoint(folder, {"weights": trainable_state(model), "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                     "rng": rng_state(), "progress": progress, "fingerprint": fingerprint})


def write_checkpoint(folder: Path, state: dict) -> Path:
    """`state` to `checkpoints/step-*.pt`; then the checkpoints older than the newest KEEP go, and `.tmp` files."""
    path = checkpoint_path(folder, state["progress"]["step"])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(state, path, with_checksum=True)
    complete = sorted((int(m.group(1)), p) for p in path.parent.iterdir() if (m := NAME.match(p.name)))
    for _, old in complete[:-KEEP]:
        old.unlink()
        checksum_path(old).unlink(missing_ok=True)
    for old in path.parent.glob("step-*.tmp"):
        old.unlink()
    return path


def flat(record: dict, prefix: str = "") -> dict:
    """{"train": {"optim": {"lr": 1e-3}}} -> {"train.optim.lr": 1e-3}: a fingerprint's keys, one per setting."""
    items = {}
    for key, value in record.items():
        items.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return items


def load_checkpoint(path: Path, model, optimizer, scheduler, scaler, fingerprint: dict) -> dict:
    """Restore everything `save_checkpoint` wrote into the live objects; return the progress record (resume.py)."""
    from train_loop.resume import load_checkpoint as load  # only --resume reads a checkpoint back

    return load(path, model, optimizer, scheduler, scaler, fingerprint)


def save_best(folder: Path, model) -> None:
    """The trainable weights with the lowest validation loss so far (restored at the end by `load_best`)."""
    write_best(folder, trainable_state(model))


def write_best(folder: Path, weights: dict[str, torch.Tensor]) -> None:
    (folder / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    save_atomic(weights, best_path(folder))


def best_path(folder: Path) -> Path:
    return folder / CHECKPOINT_DIR / BEST_FILE


def load_best(folder: Path, model) -> bool:
    path = best_path(folder)
    if not path.is_file():
        return False
    load_trainable_state(model, torch.load(path, map_location="cpu", weights_only=True))
    return True


# ---- the run folder ----------------------------------------------------------------------------------------------

def prepare_run_folder(folder: Path, overwrite: bool, resume: bool, mode: str, model: str, processes: int = 1,
                       fsdp: bool = False) -> Path:
    """The folder of a training run: another run's results or an unfinished run's checkpoints are not written over
    without --overwrite; --resume needs a checkpoint of this run (resume.py)."""
    out = prepare_output_dir(folder, overwrite=overwrite, resume=resume)
    if resume:
        from train_loop.resume import check_resumable

        check_resumable(out, mode, model, processes, fsdp)
    elif latest_checkpoint(out) is not None:
        if not overwrite:
            raise ValueError(f"--output-dir {out} holds checkpoints of an unfinished run; pass --resume to "
                             f"continue it or --overwrite to start over")
        shutil.rmtree(out / CHECKPOINT_DIR)
    return out


def check_disk_space(out: Path, trainable: int, total: int, mode: str) -> None:
    """Fail before training, not at the first checkpoint: fp32 weights + two AdamW moments, three times (the two
    kept checkpoints and the new one during a save), the best weights, and the final model (full) or adapter (LoRA)."""
    need = 4 * (3 * trainable * (KEEP + 1) + trainable + (total if mode == "full" else trainable))
    free = shutil.disk_usage(out).free
    if free < need:
        raise ValueError(f"--output-dir {out}: {free / 2**20:,.0f} MiB free, this run needs about "
                         f"{need / 2**20:,.0f} MiB for checkpoints and the final model; free space or choose another folder")

"""--resume after damage: find the newest checkpoint that is whole, say which ones were not, delete nothing.

`save_atomic` (checkpoint.py) makes sure a crash never leaves a half-written `step-*.pt`, but a file can be damaged
after it was written: copied with a full disk, truncated in a transfer, read back from a failing disk. Two tests,
cheapest first:

* its bytes against the SHA-256 written beside it (`step-00000040.pt.sha256`, checkpoint.py): a changed byte
  anywhere is found, the way `sha256sum -c` finds it;
* a checkpoint with no checksum file (written before checksums existed) must at least open: `torch.load` reads
  a checkpoint's zip index from the end of the file, so a truncated one fails there.

The newest whole checkpoint is the one to resume. Every damaged checkpoint newer than it is renamed
`step-00000040.pt.damaged`: kept for whoever wants to look at it (never deleted), and out of the way of the next
`latest_checkpoint` and of checkpoint.py's clean-up, which only touch `step-*.pt` and `*.tmp`. When no checkpoint
is whole, nothing is renamed and the error names each file and what is wrong with it.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from train_loop import checkpoint as ckpt

log = logging.getLogger(__name__)
DAMAGED_SUFFIX = ".damaged"


def sha256_of(path: Path, block: int = 1 << 20) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            sha.update(chunk)
    return sha.hexdigest()


def damage(path: Path) -> str | None:
    """What is wrong with the checkpoint at `path`, or None when it is whole."""
    sidecar = ckpt.checksum_path(path)
    if sidecar.is_file():
        expected = (sidecar.read_text().split() or [""])[0]
        return None if sha256_of(path) == expected else f"its SHA-256 does not match {sidecar.name}"
    try:  # memory-mapped: opening checks the zip index without reading a multi-GB file into memory
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)["fingerprint"]
    except (RuntimeError, OSError, EOFError, KeyError, ValueError) as err:
        return f"torch.load cannot read it: {ckpt.first_line(err)}"
    return None


def aside(path: Path) -> Path:
    """`step-00000040.pt.damaged`, or `.damaged.1`, ... when an earlier damaged file of that step is kept there."""
    target, n = path.with_name(path.name + DAMAGED_SUFFIX), 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}.{n}")
    return target


def resumable_checkpoint(folder: Path) -> Path | None:
    """The newest whole checkpoint in `folder/checkpoints` (None when there is none at all); damaged newer ones are
    renamed aside and reported in one log line. Raises ValueError when every checkpoint is damaged."""
    found = sorted(((int(m.group(1)), p) for p in (folder / ckpt.CHECKPOINT_DIR).glob("step-*.pt")
                    if (m := ckpt.NAME.match(p.name))), reverse=True)
    damaged: list[tuple[Path, str]] = []
    for _, path in found:
        problem = damage(path)
        if problem is None:
            for bad, _ in damaged:
                bad.rename(aside(bad))
            if damaged:
                log.warning("--resume: %s; kept as *%s. Resuming from %s, the newest whole checkpoint",
                            "; ".join(f"checkpoint {bad} is damaged ({why})" for bad, why in damaged),
                            DAMAGED_SUFFIX, path)
            return path
        damaged.append((path, problem))
    if damaged:
        raise ValueError("--resume: no whole checkpoint to resume from: "
                         + "; ".join(f"{bad} is damaged ({why})" for bad, why in damaged)
                         + ". Nothing was deleted; start afresh with another --output-dir")
    return None


def check_resumable(out: Path, mode: str, model: str, processes: int, fsdp: bool) -> None:
    """--resume: there is a whole checkpoint, and it is from this mode and model, on as many processes, with the same
    --fsdp (its fingerprint, checked in full when it is loaded, says the rest)."""
    latest = resumable_checkpoint(out)
    if latest is None:
        raise ValueError(f"--resume: {out}/{ckpt.CHECKPOINT_DIR} holds no checkpoint; run without --resume")
    saved = ckpt.read_fingerprint(latest)
    if (saved.get("mode"), saved.get("model")) != (mode, model):
        raise ValueError(f"--resume: checkpoint {latest} is from --mode {saved.get('mode')} --model "
                         f"{saved.get('model')}; this run is --mode {mode} --model {model}")
    written, now = (saved.get("processes", 1), saved.get("fsdp", False)), (processes, fsdp)
    if written != now:
        raise ValueError(f"--resume: checkpoint {latest} was written by {described(*written)}; this run has "
                         f"{described(*now)}. Resume with the same number of processes (torchrun "
                         f"--nnodes x --nproc_per_node) and the same --fsdp: each process's share of the data "
                         f"and its random state are part of the checkpoint")


def described(count: int, fsdp: bool) -> str:
    return f"{count} process{'es' if count > 1 else ''}{' with --fsdp' if fsdp else ''}"

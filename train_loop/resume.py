"""--resume: the newest whole checkpoint (damaged ones set aside, never deleted), checked to be this run's, and read
back into the live objects. A run that does not resume never imports this file.

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
import random
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
        return f"torch.load cannot read it: {first_line(err)}"
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
    saved = torch.load(latest, map_location="cpu", weights_only=True, mmap=True)["fingerprint"]  # mmap: reads little
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


def check_fingerprint(saved: dict, current: dict, path: Path) -> None:
    """Refuse a checkpoint written by a run with another model, mode or data: resuming it would be silently wrong."""
    differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differ:
        details = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}" for k in differ[:3])
        raise ValueError(f"--resume: checkpoint {path} belongs to another run ({details}); "
                         f"pass the same flags, or another --output-dir to start afresh")


def read_checkpoint(path: Path, fingerprint: dict) -> dict:
    """The whole checkpoint, after checking that it belongs to this run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as err:  # a damaged file (`damage` finds these first)
        raise ValueError(f"--resume: checkpoint {path} cannot be read ({first_line(err)}); "
                         f"it is damaged") from err
    check_fingerprint(state["fingerprint"], fingerprint, path)
    return state


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def load_checkpoint(path: Path, model, optimizer, scheduler, scaler, fingerprint: dict) -> dict:
    """Restore everything `save_checkpoint` wrote into the live objects; return the progress record."""
    state = read_checkpoint(path, fingerprint)
    ckpt.load_trainable_state(model, state["weights"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["progress"]


def set_rng_state(state: dict) -> None:
    """Put back what `checkpoint.rng_state` saved: Python's, the CPU's and this process's own CUDA device's."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if cuda is None or not torch.cuda.is_available():
        return
    device = torch.cuda.current_device()
    if isinstance(cuda, (list, tuple)):  # an older checkpoint: every visible device's state; ours is entry `device`
        if device >= len(cuda):
            return
        cuda = cuda[device]
    torch.cuda.set_rng_state(cuda, device)

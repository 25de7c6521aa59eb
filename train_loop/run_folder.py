"""The run folder of `--mode full|lora`: what may be written where, checked before anything slow starts, and the
model or adapter saved into it at the end.

* A folder holding another run's results or an unfinished run's checkpoints is not overwritten without
  --overwrite; --resume needs a checkpoint of the same mode, model, number of processes and --fsdp setting.
* The disk must hold the checkpoints and the final model: checked before training, not at the first checkpoint.
* Full fine-tuning saves a `save_pretrained` folder transformers loads; LoRA saves the adapter in peft's format.

Under torchrun only rank 0 calls these (modes/train.py, through `Parallel.run_on_main`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from eval.results import prepare_output_dir
from train_loop import checkpoint as ckpt
from train_loop.checkpoint_check import resumable_checkpoint


def prepare_folder(folder: Path, mode: str, model: str, overwrite: bool = False, resume: bool = False,
                   processes: int = 1, fsdp: bool = False) -> Path:
    """The run folder, refusing to overwrite another run, and to resume from nothing or from another run."""
    out = prepare_output_dir(folder, overwrite=overwrite, resume=resume)
    try:  # os.access says yes to root even on a read-only file system: write something to be sure
        (out / ".write_test").write_bytes(b"")
        (out / ".write_test").unlink()
    except OSError as err:
        raise PermissionError(f"--output-dir {out} is not writable ({err.strerror}); choose another folder") from err
    latest = resumable_checkpoint(out) if resume else ckpt.latest_checkpoint(out)  # skips damaged ones
    if resume and latest is None:
        raise ValueError(f"--resume: {out}/{ckpt.CHECKPOINT_DIR} holds no checkpoint; run without --resume")
    if resume:
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
    elif latest is not None and not overwrite:
        raise ValueError(f"--output-dir {out} holds checkpoints of an unfinished run; pass --resume to continue it "
                         f"or --overwrite to start over")
    elif latest is not None:
        shutil.rmtree(out / ckpt.CHECKPOINT_DIR)
    return out


def described(count: int, fsdp: bool) -> str:
    return f"{count} process{'es' if count > 1 else ''}{' with --fsdp' if fsdp else ''}"


def check_disk_space(out: Path, trainable: int, total: int, mode: str) -> None:
    """Fail before training, not at the first checkpoint: fp32 weights + two AdamW moments, three times (the two
    kept checkpoints and the new one during a save), the best weights, and the final model (full) or adapter (LoRA)."""
    need = 4 * (3 * trainable * (ckpt.KEEP + 1) + trainable + (total if mode == "full" else trainable))
    free = shutil.disk_usage(out).free
    if free < need:
        raise ValueError(f"--output-dir {out}: {free / 2**20:,.0f} MiB free, this run needs about "
                         f"{need / 2**20:,.0f} MiB for checkpoints and the final model; free space or choose another folder")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_model(model, tokenizer, out: Path, mode: str, base_model: str) -> int:
    """Full: a `save_pretrained` folder transformers loads. LoRA: the adapter in peft's format, naming `base_model`.
    Returns its bytes."""
    if mode == "full":
        model.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
        return folder_bytes(out / "model")
    from lora.checkpoint import save_adapter

    # peft loads the base model from this name: a hub id as given, a local folder as an absolute path (a relative
    # one would point elsewhere as soon as the adapter is loaded from another working directory)
    local = Path(base_model).expanduser()
    base = str(local.resolve()) if local.exists() else base_model
    save_adapter(model, out / "adapter", base_model_name_or_path=base)
    return folder_bytes(out / "adapter")

"""The command line as data, and the run folder it names, checked before anything slow starts: a typo or a folder
that must not be written fails in a second rather than after loading a model.

One small dataclass per concern, built once from run.py's arguments; the library never sees the argparse
namespace. Each check lives once: LoRA's in `lora.layer.LoRAConfig`, training's in `train_loop.loop.TrainConfig`
and `train_loop.step.OptimConfig`, the split of a batch over processes in `train_loop.data.check_batch_split`.

The run folder: another run's results, or an unfinished run's checkpoints, are not overwritten without
--overwrite; --resume needs a checkpoint of the same mode, model, number of processes and --fsdp setting; the disk
must hold the checkpoints and the final model. Under torchrun only rank 0 calls these (`Parallel.run_on_main`).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lora.layer import LoRAConfig
from train_loop import checkpoint as ckpt
from train_loop.loop import TrainConfig
from train_loop.step import OptimConfig


def at_least_one(**values) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} {value}: must be at least 1")


@dataclass(frozen=True)
class DataConfig:
    source: str                           # --data: hub id or local folder
    split: str = "test"                   # the split to evaluate on
    seed: int = 42
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    max_eval_samples: int | None = None
    max_input_tokens: int = 512           # prompt/input budget
    max_target_tokens: int = 128          # summary budget when training

    def __post_init__(self):
        at_least_one(max_train_samples=self.max_train_samples, max_val_samples=self.max_val_samples,
                     max_eval_samples=self.max_eval_samples, max_input_tokens=self.max_input_tokens,
                     max_target_tokens=self.max_target_tokens)


@dataclass(frozen=True)
class GenerationConfig:
    batch_size: int = 8                   # over all processes
    max_new_tokens: int = 200
    use_stemmer: bool = True              # ROUGE's Porter stemmer
    num_beams: int = 1                    # 1: greedy decoding (the course's); N > 1: beam search

    def __post_init__(self):
        at_least_one(batch_size=self.batch_size, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams)


@dataclass(frozen=True)
class OutputConfig:
    folder: Path
    overwrite: bool = False
    resume: bool = False


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run is told, by concern."""
    data: DataConfig
    gen: GenerationConfig
    out: OutputConfig
    lora: LoRAConfig
    train: TrainConfig


def run_config(args) -> RunConfig:
    return RunConfig(data_config(args), generation_config(args), output_config(args), lora_config(args),
                     train_config(args))


def data_config(args) -> DataConfig:
    return DataConfig(args.data, args.split, args.seed, args.max_train_samples, args.max_val_samples,
                      args.max_eval_samples, args.max_input_tokens, args.max_target_tokens)


def generation_config(args) -> GenerationConfig:
    return GenerationConfig(args.batch_size, args.max_new_tokens, args.stemmer, getattr(args, "num_beams", 1))


def output_config(args) -> OutputConfig:
    return OutputConfig(Path(args.output_dir or Path("runs") / args.mode), args.overwrite,
                        getattr(args, "resume", False))


def lora_config(args) -> LoRAConfig:
    """A is drawn from --lora-init-seed, or from --seed when it is left out (a plain --mode lora run); --mode sweep
    gives each of its runs a seed of its own (modes/sweep.py)."""
    init_seed = args.lora_init_seed if args.lora_init_seed is not None else args.seed
    return LoRAConfig(args.lora_targets, args.lora_r, args.lora_alpha, args.lora_dropout, args.rslora, init_seed)


def train_config(args, precision: str = "fp32") -> TrainConfig:
    """`optim.lr` is None when --lr is left out: the mode's default, set once the model is known (modes/train.py)."""
    optim = OptimConfig(lr=args.lr, weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
                        eps=args.adam_eps, warmup_steps=args.warmup_steps, schedule=args.lr_schedule)
    return TrainConfig(optim=optim, epochs=args.epochs, max_steps=args.max_steps, grad_accum=args.grad_accum,
                       max_grad_norm=args.max_grad_norm, eval_every=args.eval_every, save_every=args.save_every,
                       precision=precision)


# ---- the run folder: what may be written where -----------------------------------------------------------------

RESULT_FILES = ("metrics.json", "predictions.csv")


def prepare_output_dir(path: str | os.PathLike, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the run folder; refuse to write over another run's results unless told to."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output-dir {out} is a file, not a folder")
    if out.is_dir() and not (overwrite or resume) and any((out / name).exists() for name in RESULT_FILES):
        raise ValueError(f"--output-dir {out} already holds a run's results; pass --overwrite or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise PermissionError(f"--output-dir {out} is not writable")
    return out


def prepare_folder(folder: Path, mode: str, model: str, overwrite: bool = False, resume: bool = False,
                   processes: int = 1, fsdp: bool = False) -> Path:
    """The run folder, refusing to overwrite another run, and to resume from nothing or from another run."""
    out = prepare_output_dir(folder, overwrite=overwrite, resume=resume)
    try:  # os.access says yes to root even on a read-only file system: write something to be sure
        (out / ".write_test").write_bytes(b"")
        (out / ".write_test").unlink()
    except OSError as err:
        raise PermissionError(f"--output-dir {out} is not writable ({err.strerror}); choose another folder") from err
    if not resume:
        if ckpt.latest_checkpoint(out) is not None:
            if not overwrite:
                raise ValueError(f"--output-dir {out} holds checkpoints of an unfinished run; pass --resume to "
                                 f"continue it or --overwrite to start over")
            shutil.rmtree(out / ckpt.CHECKPOINT_DIR)
        return out
    from train_loop.checkpoint_check import resumable_checkpoint  # only --resume looks for damaged checkpoints

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

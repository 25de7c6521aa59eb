"""The command line as data: one small dataclass per concern, built once from run.py's arguments and checked when
it is made, so a typo fails in a second rather than after loading a model.

The library never sees the argparse namespace: a runner passes these values, or their fields, explicitly. Each
check lives once: LoRA's settings are checked by `lora.inject.LoRAConfig`, training's by `train_loop.loop.TrainConfig`
and `train_loop.optim.OptimConfig`, the split of a batch over processes by `train_loop.data.check_batch_split`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lora.inject import LoRAConfig
from train_loop.loop import TrainConfig
from train_loop.optim import OptimConfig


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
    targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    return LoRAConfig(targets, args.lora_r, args.lora_alpha, args.lora_dropout, args.rslora)


def train_config(args, precision: str = "fp32") -> TrainConfig:
    """`optim.lr` is None when --lr is left out: the mode's default, set once the model is known (modes/train.py)."""
    optim = OptimConfig(lr=args.lr, weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
                        eps=args.adam_eps, warmup_steps=args.warmup_steps, schedule=args.lr_schedule)
    return TrainConfig(optim=optim, epochs=args.epochs, max_steps=args.max_steps, grad_accum=args.grad_accum,
                       max_grad_norm=args.max_grad_norm, eval_every=args.eval_every, save_every=args.save_every,
                       precision=precision)

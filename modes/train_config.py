"""`python run.py --mode full|lora`, its configuration: the flags read once into a `TrainRun`.

`config_from_args` makes every check and resolves the learning rate and precision before anything slow starts;
below it nothing sees the command line (modes/train.py runs what it builds). Default learning rates follow the
course's seeds: LoRA 1e-3; full 1e-4 for d_model <= 512, else 1e-5; below d_model 256 (models/baby-flan-t5) LoRA
3e-3 and full 1e-3 (`default_lr`). The dialogues are DialogSum's, or your own files' (`data_config`,
prompting/own_data.py). A checkpoint must share every setting but `NOT_TRAINING` with the run that resumes it
(`resume_fingerprint`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from eval.evaluate import as_record
from lora.layer import LoRAConfig
from model.device import choose_precision, resolve_device
from model.generate import GenerationConfig
from model.load import is_local, model_width
from prompting.dialogsum import DEFAULT_DATA, DataConfig
from prompting.prompts import choose_template
from train_loop import checkpoint as ckpt
from train_loop.data import check_batch_split
from train_loop.loop import TrainConfig
from train_loop.step import OptimConfig

if TYPE_CHECKING:
    from train_loop.snapshots import SnapshotConfig


@dataclass(frozen=True)
class TrainRun:
    """Everything a --mode full|lora run is told: metrics.json records all of it, the checkpoint's fingerprint all
    but NOT_TRAINING, so a new flag lands in both without a line of its own."""
    mode: str                        # full | lora
    model: str                       # --model: hub id or folder
    random_init: bool
    seed: int                        # the random init, LoRA's A, the dropout masks
    data: DataConfig
    batch_size: int                  # over all processes: each of N takes batch_size / N
    train: TrainConfig               # the optimiser, the steps, the precision (resolved for the device)
    lr_default: bool                 # --lr left out: train.optim.lr is the mode's default for this model
    lora: LoRAConfig | None          # None in --mode full
    prompt: str                      # {dialogue} in it: --prompt, else the one saved with --model, else the course's
    generation: GenerationConfig
    use_stemmer: bool
    merge: bool                      # also save the model with the adapter merged in
    output_dir: Path
    overwrite: bool
    resume: bool
    device: str                      # cpu | cuda (under torchrun each process takes cuda:LOCAL_RANK)
    precision_reason: str
    processes: int                   # torchrun's WORLD_SIZE
    fsdp: bool
    cpu_kernels: bool
    quantize_base: str | None = None  # "nf4": the frozen base in 4 bits under LoRA (QLoRA, lora/nf4.py)
    double_quant: bool = False       # and its absmax constants in 8 bits
    snapshots: SnapshotConfig | None = None  # --snapshot-every: the target layers' weights kept (snapshots.py)


# What a resume may change: the evaluation, where results go, and words.
NOT_TRAINING = ("data.split", "data.max_eval_samples", "data.test_file", "generation.", "use_stemmer", "merge",
                "output_dir", "overwrite", "resume", "device", "precision_reason", "lr_default", "train.save_every",
                "train.progress_bar", "snapshots")


def resume_fingerprint(config: TrainRun) -> dict:
    """What a checkpoint must share with the run that resumes it: every setting but NOT_TRAINING, flat."""
    return {k: v for k, v in ckpt.flat(as_record(config)).items() if not k.startswith(NOT_TRAINING)}


def default_lr(mode: str, d_model: int) -> float:
    """The course's seeds (LoRA 1e-3; full 1e-4 for flan-t5-small, 1e-5 for base and up), and 3e-3 / 1e-3 for a
    model narrower than 256 such as models/baby-flan-t5: pretrained for 48 minutes, it starts far weaker, and
    at 1e-4 full fine-tuning had only reached a train loss of 4.3 after 500 steps of 8 (1e-3: 2.8 after 90),
    its summaries one phrase repeated (docs/pretraining.md)."""
    if d_model < 256:
        return 3e-3 if mode == "lora" else 1e-3
    return 1e-3 if mode == "lora" else (1e-4 if d_model <= 512 else 1e-5)


def lora_config(args) -> LoRAConfig:
    """A is drawn from --lora-init-seed, or from --seed when it is left out (a plain --mode lora run); --mode sweep
    gives each of its runs a seed of its own (modes/sweep.py)."""
    init_seed = args.lora_init_seed if args.lora_init_seed is not None else args.seed
    return LoRAConfig(args.lora_targets, args.lora_r, args.lora_alpha, args.lora_dropout, args.rslora, init_seed,
                      args.lora_variant)


def data_config(args) -> DataConfig:
    """--data, or your own files (--train-file & co.), whose columns and split the other flags name (own_data.py)."""
    files = (args.train_file, args.validation_file, args.test_file)
    if any(files) and args.data != DEFAULT_DATA:
        raise ValueError(f"--data {args.data} and --train-file/--validation-file/--test-file: give one file to split "
                         "with --data, or one file per split, not both")
    data = DataConfig(None if any(files) else args.data, args.split, args.seed, args.max_train_samples,
                      args.max_val_samples, args.max_eval_samples, args.max_input_tokens, args.max_target_tokens,
                      *files, args.dialogue_column or "dialogue", tuple(args.summary_column or ("summary",)),
                      args.id_column, args.validation_size, args.test_size, args.split_seed)
    columns = [flag for flag, value in (("--dialogue-column", args.dialogue_column),
                                        ("--summary-column", args.summary_column), ("--id-column", args.id_column))
               if value]
    if columns and not data.own_files:
        raise ValueError(f"{columns[0]} names a column of your own files (--data FILE.csv|FILE.jsonl, or --train-file "
                         f"& co.); --data {args.data} is read in DialogSum's layout")
    return data


def train_config(args, lr: float, precision: str, optimizer: str) -> TrainConfig:
    """The loop's configuration from the flags; `lr` and `optimizer` as the mode resolved them (--lr, --optimizer
    or the mode's defaults)."""
    optim = OptimConfig(lr=lr, weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
                        eps=args.adam_eps, warmup_steps=args.warmup_steps, schedule=args.lr_schedule,
                        loraplus_lr_ratio=args.loraplus_lr_ratio, optimizer=optimizer)
    return TrainConfig(optim, args.epochs, args.max_steps, args.grad_accum, args.max_grad_norm, args.eval_every,
                       args.save_every, precision, select_by=args.select_by, patience=args.early_stopping_patience)


def config_from_args(args, mode: str | None = None, output_dir: Path | None = None) -> TrainRun:
    """The run the flags describe (`mode` and `output_dir` given: one run of --mode compare or sweep)."""
    mode = mode or args.mode
    data, generation = data_config(args), GenerationConfig(args.max_new_tokens, args.num_beams)
    data.check_files(("train", "validation", data.split))
    lora = lora_config(args)  # checked in --mode full too: a bad flag is refused, whatever the mode
    if args.merge and mode != "lora":
        raise ValueError("--merge merges a LoRA adapter: use it with --mode lora")
    check_family(args.lora_variant, args.loraplus_lr_ratio, args.quantize_base, args.nf4_double_quant, mode)
    if args.adapter:
        raise ValueError("--adapter summarises with an adapter already trained: use it with --mode zero-shot "
                         "(or one-shot / few-shot)")
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's; checked before any process waits on another
    check_batch_split(args.batch_size, processes)
    if args.select_by != "loss" and processes > 1:
        raise ValueError(f"--select-by {args.select_by} summarises the validation dialogues on one process; under "
                         "torchrun keep --select-by loss")
    prompt = choose_template(args.prompt, args.model if is_local(args.model) else None)[0]
    device = resolve_device(args.device)
    if args.fsdp and processes == 1:
        raise ValueError("--fsdp shards the model over several processes: launch run.py with "
                         "torchrun --nproc_per_node N (N >= 2)")
    precision, precision_reason = choose_precision(args.precision, device)
    snapshots = snapshot_config(args, lora)
    # LoRA's default differs only below d_model 256 (a local folder such as models/baby-flan-t5): a hub id is not
    # looked up for it, so --mode lora checks its flags and run folder before the hub is reached
    width = model_width(args.model) if mode == "full" or is_local(args.model) else 512
    lr = args.lr if args.lr is not None else default_lr(mode, width)
    return TrainRun(mode, args.model, args.random_init, args.seed, data, args.batch_size,
                    train_config(args, lr, precision, args.optimizer or "adamw"), args.lr is None,
                    lora if mode == "lora" else None, prompt, generation,
                    args.stemmer, args.merge, Path(output_dir or args.output_dir or Path("runs") / mode),
                    args.overwrite, args.resume, device.type, precision_reason, processes, args.fsdp, args.cpu_kernels,
                    args.quantize_base, args.nf4_double_quant, snapshots)


def snapshot_config(args, lora: LoRAConfig) -> SnapshotConfig | None:
    """--snapshot-every N: the --lora-targets layers' weights every N steps (--mode full: their W)."""
    if not args.snapshot_every:
        return None
    if args.fsdp:
        raise ValueError("--snapshot-every reads whole weights; FSDP shards them: drop --fsdp or --snapshot-every")
    from train_loop.snapshots import SnapshotConfig  # only when asked for, as its writer (modes/train.py)

    return SnapshotConfig(args.snapshot_every, lora.targets)


def check_family(variant: str, loraplus_ratio: float | None, quantize: str | None, double_quant: bool,
                 mode: str) -> None:
    """LoRA's family (docs/lora-family.md): what combines. A 4-bit base carries plain LoRA or LoRA+ only: DoRA and
    PiSSA read and rewrite the frozen W itself (its norm; its residual), which here is kept in full precision."""
    flags = [flag for flag, used in (("--lora-variant", variant != "lora"), ("--loraplus-lr-ratio", loraplus_ratio
             is not None), ("--quantize-base", quantize is not None)) if used]
    if flags and mode != "lora":
        raise ValueError(f"{', '.join(flags)}: LoRA's family trains adapters; use --mode lora (or sweep)")
    if double_quant and quantize is None:
        raise ValueError("--nf4-double-quant quantises the absmax of a 4-bit base: add --quantize-base nf4")
    if quantize is not None and variant != "lora":
        raise ValueError(f"--lora-variant {variant} with --quantize-base {quantize} is not supported: a 4-bit base "
                         f"carries plain LoRA (QLoRA) or LoRA+; drop one of the two flags")

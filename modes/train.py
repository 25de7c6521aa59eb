"""`python run.py --mode full|lora`: fine-tune FLAN-T5 on a train split, validate, then evaluate.

`config_from_args` reads the flags once into a `TrainRun`, every check made and the learning rate and precision
resolved, before anything slow starts; below it nothing sees the command line. Default learning rates follow the
course's seeds: LoRA 1e-3; full 1e-4 for d_model <= 512, else 1e-5; below d_model 256 (models/baby-flan-t5) LoRA
3e-3 and full 1e-3 (`default_lr`). The model saved and evaluated has the lowest validation loss (the Trainer's
`load_best_model_at_end`), or with `--select-by rouge1|...` the highest validation ROUGE, the validation dialogues
summarised as the evaluation will summarise (train_loop/val_rouge.py): full fine-tuning saves it with
`save_pretrained`, LoRA its adapter in peft's format, each with the prompt template it learned (`prompt.json`, read
back by `--adapter` and `--model`). `processes` is loop.py's `OneProcess`, or under torchrun distributed.py's
`Parallel`: each process trains on its share of every batch and summarises its share of the dialogues; rank 0
alone prepares the folder, prints and writes. The dialogues are DialogSum's, or your own files' (`data_config`,
prompting/own_data.py).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from eval.evaluate import as_record, finish_run, plot_loss_curve
from lora.layer import LoRAConfig
from model.device import MemoryLedger, choose_precision, describe_machine, resolve_device
from model.generate import GenerationConfig, generate, mean_length
from model.load import count_parameters, is_local, load_model_and_tokenizer, model_width
from prompting.dialogsum import DEFAULT_DATA, DataConfig, load_data
from prompting.prompts import build_prompts, choose_template, save_template
from train_loop import checkpoint as ckpt
from train_loop.data import batches_by_epoch, check_batch_split
from train_loop.loop import LOG_FILE, OneProcess, TrainConfig, read_log, train
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


def train_config(args, lr: float, precision: str) -> TrainConfig:
    optim = OptimConfig(lr=lr, weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
                        eps=args.adam_eps, warmup_steps=args.warmup_steps, schedule=args.lr_schedule,
                        loraplus_lr_ratio=args.loraplus_lr_ratio)
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
                    train_config(args, lr, precision), args.lr is None, lora if mode == "lora" else None, prompt,
                    generation,
                    args.stemmer, args.merge, Path(output_dir or args.output_dir or Path("runs") / mode),
                    args.overwrite, args.resume, device.type, precision_reason, processes, args.fsdp, args.cpu_kernels,
                    args.quantize_base, args.nf4_double_quant, snapshots)


def snapshot_config(args, lora: LoRAConfig) -> SnapshotConfig | None:
    """--snapshot-every N: the --lora-targets layers' weights every N steps (--mode full: their W)."""
    if not args.snapshot_every:
        return None
    if args.fsdp:
        raise ValueError("--snapshot-every reads whole weights; FSDP shards them: drop --fsdp or --snapshot-every")
    from train_loop.snapshots import SnapshotConfig  # only when asked for, as the writer below

    return SnapshotConfig(args.snapshot_every, lora.targets)


def snapshot_info(config: TrainRun) -> dict:
    """What a snapshot file records beside its tensors: enough to rebuild W_t from it and the base model."""
    from lora.layer import lora_scaling

    lora = config.lora
    return {"method": lora.variant if lora else "full", "model": config.model, "random_init": config.random_init,
            "seed": config.seed, "quantize_base": config.quantize_base,
            "scaling": lora_scaling(lora.r, lora.alpha, lora.use_rslora) if lora else None}


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


def run(config: TrainRun) -> dict:
    """Train, evaluate and write the run folder; returns the metrics (on every process)."""
    if config.processes == 1:
        return train_and_evaluate(config, OneProcess(), torch.device(config.device))
    from train_loop.distributed import on_every_process  # torchrun's N processes: only then

    return on_every_process(partial(train_and_evaluate, config), torch.device(config.device), config.fsdp,
                            config.output_dir)


def build_model(config: TrainRun):
    """(model, tokenizer): pretrained (or random with --random-init), with LoRA injected in --mode lora."""
    model, tokenizer = load_model_and_tokenizer(config.model, config.random_init, config.seed)
    torch.manual_seed(config.seed)  # full: the dropout masks start from --seed
    if config.lora is not None:
        from lora.layer import add_lora

        add_lora(model, config.lora)  # reseeds with lora.init_seed: A the same in every process and on every resume
        if config.quantize_base:
            from lora.nf4 import QuantConfig, quantize_base

            quantize_base(model, QuantConfig(config.quantize_base, config.double_quant))  # every frozen Linear
    return model, tokenizer


def train_and_evaluate(config: TrainRun, processes, device: torch.device) -> dict:
    main, world, data = processes.main, processes.world_size, config.data
    out = processes.run_on_main(lambda: ckpt.prepare_run_folder(
        config.output_dir, config.overwrite, config.resume, config.mode, config.model, world, config.fsdp))
    model, tokenizer = build_model(config)
    if config.cpu_kernels and device.type == "cpu":
        from train_loop.cpu_speed import speed_up_on_cpu

        speed_up_on_cpu(model)
    trainable, total = count_parameters(model)
    processes.run_on_main(lambda: ckpt.check_disk_space(out, trainable, total, config.mode))
    if main:
        shares = f" on {world} processes ({config.batch_size // world} each)" if world > 1 else ""
        print(f"{config.mode} fine-tuning of {config.model}: {trainable:,} of {total:,} parameters trainable; "
              f"lr {config.train.optim.lr:g}{' (default)' if config.lr_default else ''}, batch "
              f"{config.batch_size} x {config.train.grad_accum}{shares}{', FSDP' if config.fsdp else ''}, "
              f"{device.type}; {config.precision_reason}; writing to {out}")
    examples = {split: examples_for(data, split, world) for split in ("train", "validation")}
    batches = {split: batches_by_epoch(examples[split], tokenizer, config.batch_size, data.seed, data.max_input_tokens,
                                       data.max_label_tokens, processes.rank, world, template=config.prompt)
               for split in examples}
    val_rouge = None
    if config.train.select_by != "loss":  # the validation dialogues summarised as evaluate() will summarise
        from train_loop.val_rouge import rouge_of_summaries

        val_rouge = rouge_of_summaries(examples["validation"], tokenizer, config.prompt, config.generation,
                                       config.batch_size, device, data.max_input_tokens, config.train.precision,
                                       config.use_stemmer)
    if not processes.fsdp:  # on the device before the ledger reads it (FSDP moves only each process's shards)
        model.to(device)
    on_step = None
    if config.snapshots is not None:  # a plain run never loads snapshots.py
        from train_loop.snapshots import snapshot_writer

        on_step = snapshot_writer(out, model, config.snapshots, snapshot_info(config), main)
    with MemoryLedger(model, device) as ledger:  # weights, gradients, optimiser state, the rest (model/device.py)
        result = train(model, batches["train"], config.train, device, folder=out, val_batches=batches["validation"](0),
                       resume=config.resume, fingerprint=resume_fingerprint(config), processes=processes,
                       val_rouge=val_rouge, on_step=on_step)
    if main:
        plot_loss_curve(read_log(out / LOG_FILE), out / "loss_curve.png", title=f"{config.mode}: {config.model}")
    p = result.progress
    if result.interrupted:
        if main:
            print(f"stopped after step {p.step}; checkpoint {result.checkpoint}; --resume continues")
        raise KeyboardInterrupt
    if p.skipped_steps and main:
        print(f"fp16: the GradScaler skipped {p.skipped_steps} of {p.step} steps (inf/NaN gradients); see "
              f"train_log.jsonl")
    if processes.fsdp:  # generation needs whole weights (sharding.py)
        from train_loop.dist_checkpoint import unsharded

        model = unsharded(model, lambda: build_model(config)[0].to(device))
    processes.checkpoints.load_best(out, model)
    artifact_bytes = processes.run_on_main(lambda: save_model(model, tokenizer, out, config))
    results = {"machine": describe_machine(device), "steps": p.step,
               "final_train_loss": p.losses[-1] if p.losses else None, "best_val_loss": p.best_val_loss,
               "best_step": p.best_step, "selected_by": config.train.select_by, "best_val_score": p.best_score,
               "stopped_early": p.stopped_early,  # tokens/s over the whole time, validation and checkpoints included:
               "tokens_per_s": round(p.tokens / max(p.train_seconds, 1e-9), 1), "skipped_steps": p.skipped_steps,
               "train_seconds": round(p.train_seconds, 1), "trainable_params": trainable, "total_params": total,
               "peak_memory_mb": round(result.peak_memory_mb, 1), "memory_ledger": ledger.result(),
               "artifact_bytes": artifact_bytes}
    if data.own_files:
        from prompting.own_data import split_record

        results["data_split"] = split_record(data)
    return evaluate(config, model, tokenizer, out, device, {**as_record(config), **results}, processes)


def examples_for(data: DataConfig, split: str, processes: int) -> list:
    """The train or validation dialogues (--max-train/val-samples of them), at least one for every process: a batch
    with fewer examples than processes is left out (train_loop/data.py), and an empty epoch trains nothing."""
    limit, flag = ((data.max_train_samples, "--max-train-samples") if split == "train"
                   else (data.max_val_samples, "--max-val-samples"))
    examples = load_data(data, split, limit)
    if len(examples) < processes:
        raise ValueError(f"{flag} {limit}: {len(examples)} {split} dialogue(s) make no batch for {processes} "
                         f"processes; use at least {processes}")
    return examples


def evaluate(config: TrainRun, model, tokenizer, out: Path, device, info: dict, processes) -> dict:
    """Summaries of the evaluation split by the best model, ROUGE, metrics.json. On N processes each summarises
    every N-th dialogue; rank 0 gathers them back in order and scores them all, as one process would."""
    data = config.data
    examples = load_data(data, data.split, data.max_eval_samples)
    # The prompt the model was trained on, cut inside the template as in training (train_loop/data.py)
    prompts = build_prompts(examples, tokenizer, shots=0, seed=data.seed, max_tokens=data.max_input_tokens,
                            template=config.prompt).prompts
    start = time.perf_counter()
    mine = generate(model, tokenizer, processes.share(prompts), config.generation,
                    config.batch_size // processes.world_size, device, data.max_input_tokens, config.train.precision,
                    progress=processes.main)
    lengths = processes.gather_shares(mine.lengths)
    predictions = processes.gather_shares(mine.texts)
    info.update(generation_seconds=round(time.perf_counter() - start, 1), gen_len=mean_length(lengths or []))

    def finish() -> dict:  # rank 0
        if config.merge:
            from lora.merge import unload_lora

            if config.quantize_base:  # merging needs a full-precision W: the dequantised one
                from lora.nf4 import dequantize_base

                dequantize_base(model)

            merged = unload_lora(model, merge=True)
            merged.save_pretrained(out / "merged_model")
            tokenizer.save_pretrained(out / "merged_model")
            save_template(out / "merged_model", config.prompt)
        return finish_run(out, examples, prompts, predictions, info, use_stemmer=config.use_stemmer)
    return processes.run_on_main(finish)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_model(model, tokenizer, out: Path, config: TrainRun) -> int:
    """Full: a `save_pretrained` folder transformers loads. LoRA: the adapter in peft's format, naming the base
    model. Either with the prompt template it was trained with (prompt.json). Returns its bytes."""
    if config.mode == "full":
        model.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
        save_template(out / "model", config.prompt)
        return folder_bytes(out / "model")
    from lora.adapter_file import save_adapter

    # peft loads the base model from this name: a hub id as given, a local folder as an absolute path (a relative
    # one would point elsewhere from another working directory)
    local = Path(config.model).expanduser()
    base = str(local.resolve()) if local.exists() else config.model
    save_adapter(model, out / "adapter", base_model_name_or_path=base)
    save_template(out / "adapter", config.prompt)
    return folder_bytes(out / "adapter")

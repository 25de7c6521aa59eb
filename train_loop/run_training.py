"""`python run.py --mode full|lora`: fine-tune FLAN-T5 on DialogSum's train split, validate, then evaluate.

The wiring only; each piece lives in its own file: the model (prompting/model.py), LoRA (lora/inject.py), the data
(prompting/dialogsum.py, train_loop/tokenize.py, train_loop/batching.py), the loop (train_loop/loop.py), the
summaries (prompting/generate.py) and the scores (eval/results.py). Every bad flag is rejected before anything
slow starts; the other folders are imported where they are used.

Default learning rates follow the seeds (FACTS.md): LoRA 1e-3; full fine-tuning 1e-4 for small models
(d_model <= 512, flan-t5-small) and 1e-5 for base and larger. The model saved and evaluated at the end is the one
with the lowest validation loss (the Trainer's `load_best_model_at_end=True`).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from train_loop import checkpoint as ckpt
from train_loop.log import CURVE_FILE, LOG_FILE, plot_loss_curve
from train_loop.loop import TrainConfig, train
from train_loop.optim import OptimConfig
from train_loop.precision import resolve_precision


def default_lr(mode: str, d_model: int) -> float:
    return 1e-3 if mode == "lora" else (1e-4 if d_model <= 512 else 1e-5)


def check_args(args) -> None:
    """The flags that can be judged without a model; each error names its flag and what to do."""
    positive = {"--batch-size": args.batch_size, "--grad-accum": args.grad_accum, "--lora-r": args.lora_r,
                "--max-new-tokens": args.max_new_tokens, "--max-input-tokens": args.max_input_tokens,
                "--max-target-tokens": args.max_target_tokens}
    for flag, value in positive.items():
        if value < 1:
            raise ValueError(f"{flag} {value}: must be at least 1")
    for flag, value in {"--max-steps": args.max_steps, "--max-train-samples": args.max_train_samples,
                        "--max-eval-samples": args.max_eval_samples, "--max-val-samples": args.max_val_samples}.items():
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value}: must be at least 1 (or left out)")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr {args.lr}: the learning rate must be positive")
    if not args.lora_alpha > 0 or not 0 <= args.lora_dropout < 1:
        raise ValueError(f"--lora-alpha {args.lora_alpha} / --lora-dropout {args.lora_dropout}: need alpha > 0, 0 <= dropout < 1")
    if args.merge and args.mode != "lora":
        raise ValueError("--merge merges a LoRA adapter: use it with --mode lora")


def training_config(args, lr: float, precision: str) -> TrainConfig:
    optim = OptimConfig(lr=lr, weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
                        eps=args.adam_eps, warmup_steps=args.warmup_steps, schedule=args.lr_schedule)
    return TrainConfig(optim=optim, epochs=args.epochs, max_steps=args.max_steps, grad_accum=args.grad_accum,
                       max_grad_norm=args.max_grad_norm, eval_every=args.eval_every, save_every=args.save_every,
                       precision=precision)


def run_fingerprint(args, lr: float, precision: str) -> dict:
    """What a checkpoint must share with this run to be resumed by it (the loop adds the trainable shapes)."""
    keys = ("mode", "model", "random_init", "data", "max_train_samples", "max_val_samples", "max_input_tokens",
            "max_target_tokens", "batch_size", "seed", "epochs", "weight_decay", "warmup_steps", "lr_schedule",
            "max_grad_norm", "adam_beta1", "adam_beta2", "adam_eps")
    lora = [args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_targets, args.rslora] if args.mode == "lora" else None
    return {**{k: getattr(args, k) for k in keys}, "lr": lr, "precision": precision, "lora": lora}


def prepare_folder(args) -> Path:
    """The run folder, refusing to overwrite another run, and to resume from nothing or from another run."""
    from eval.results import prepare_output_dir

    out = prepare_output_dir(args.output_dir or Path("runs") / args.mode, overwrite=args.overwrite, resume=args.resume)
    try:  # os.access says yes to root even on a read-only file system: write something to be sure
        (out / ".write_test").write_bytes(b"")
        (out / ".write_test").unlink()
    except OSError as err:
        raise PermissionError(f"--output-dir {out} is not writable ({err.strerror}); choose another folder") from err
    latest = ckpt.latest_checkpoint(out)
    if args.resume and latest is None:
        raise ValueError(f"--resume: {out}/{ckpt.CHECKPOINT_DIR} holds no checkpoint; run without --resume")
    if args.resume:
        saved = ckpt.read_fingerprint(latest)
        for key in ("mode", "model"):
            if saved.get(key) != getattr(args, key):
                raise ValueError(f"--resume: checkpoint {latest} is from --mode {saved.get('mode')} --model "
                                 f"{saved.get('model')}; this run is --mode {args.mode} --model {args.model}")
    elif latest is not None and not args.overwrite:
        raise ValueError(f"--output-dir {out} holds checkpoints of an unfinished run; pass --resume to continue it "
                         f"or --overwrite to start over")
    elif latest is not None:
        shutil.rmtree(out / ckpt.CHECKPOINT_DIR)
    return out


def check_disk_space(out: Path, trainable: int, total: int, mode: str) -> None:
    """Fail before training, not at the first checkpoint: fp32 weights + two AdamW moments, twice (old and new
    checkpoint during a save), the best weights, and the final model (full) or adapter (LoRA)."""
    need = 4 * (3 * trainable * 2 + trainable + (total if mode == "full" else trainable))
    free = shutil.disk_usage(out).free
    if free < need:
        raise ValueError(f"--output-dir {out}: {free / 2**20:,.0f} MiB free, this run needs about "
                         f"{need / 2**20:,.0f} MiB for checkpoints and the final model; free space or choose another folder")


def encoded_batches(args, tokenizer, split: str, max_samples):
    """(encoded examples, function epoch -> list of collated batches) for one split."""
    from prompting.dialogsum import load_split
    from train_loop.batching import collate, length_grouped_batches
    from train_loop.tokenize import encode_for_training

    examples = load_split(args.data, split, max_samples=max_samples, seed=args.seed)
    enc = encode_for_training(examples, tokenizer, max_input_tokens=args.max_input_tokens,
                              max_target_tokens=args.max_target_tokens)
    lengths = [len(ids) for ids in enc.input_ids]

    def batches_for_epoch(epoch: int) -> list[dict]:
        groups = length_grouped_batches(lengths, args.batch_size, seed=args.seed, epoch=epoch)
        return [collate([enc.input_ids[i] for i in g], [enc.labels[i] for i in g], pad_id=tokenizer.pad_token_id)
                for g in groups]
    return enc, batches_for_epoch


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_model(args, model, tokenizer, out: Path) -> int:
    """Full: a `save_pretrained` folder transformers loads. LoRA: the adapter in peft's format. Returns its bytes."""
    if args.mode == "full":
        model.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
        return folder_bytes(out / "model")
    from lora.checkpoint import save_adapter

    save_adapter(model, out / "adapter", base_model_name_or_path=args.model)
    return folder_bytes(out / "adapter")


def run(args) -> dict:
    check_args(args)
    from prompting.model import build_random_init, count_parameters, load_pretrained, load_tokenizer, resolve_device

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    out = prepare_folder(args)

    tokenizer = load_tokenizer(args.model)
    model = build_random_init(args.model, seed=args.seed) if args.random_init else load_pretrained(args.model)
    lr = args.lr or default_lr(args.mode, model.config.d_model)
    config = training_config(args, lr, precision)
    torch.manual_seed(args.seed)
    if args.mode == "lora":
        from lora.inject import add_lora

        add_lora(model, targets=tuple(t.strip() for t in args.lora_targets.split(",")), r=args.lora_r,
                 alpha=args.lora_alpha, dropout=args.lora_dropout, use_rslora=args.rslora)
    trainable, total = count_parameters(model)
    check_disk_space(out, trainable, total, args.mode)
    print(f"{args.mode} fine-tuning of {args.model}: {trainable:,} of {total:,} parameters trainable; "
          f"lr {lr:g}{'' if args.lr else ' (default)'}, {precision}, batch {args.batch_size} x {args.grad_accum}, "
          f"{device.type}; writing to {out}")

    _, batches_for_epoch = encoded_batches(args, tokenizer, "train", args.max_train_samples)
    _, val_batches_for_epoch = encoded_batches(args, tokenizer, "validation", args.max_val_samples)
    result = train(model, batches_for_epoch, config, device, folder=out, val_batches=val_batches_for_epoch(0),
                   resume=args.resume, fingerprint=run_fingerprint(args, lr, precision))
    plot_loss_curve(out / LOG_FILE, out / CURVE_FILE, title=f"{args.mode}: {args.model}")
    if result.interrupted:
        print(f"stopped after step {result.progress.step}; checkpoint {result.checkpoint}; --resume continues")
        raise KeyboardInterrupt
    if result.progress.skipped_steps:
        print(f"fp16: the GradScaler skipped {result.progress.skipped_steps} of {result.progress.step} steps "
              f"(inf/NaN gradients); see train_log.jsonl")
    ckpt.load_best(out, model)
    artifact_bytes = save_model(args, model, tokenizer, out)
    return evaluate_and_finish(args, model, tokenizer, out, device, result, {
        "train_seconds": round(result.progress.train_seconds, 1), "trainable_params": trainable,
        "total_params": total, "peak_memory_mb": round(result.peak_memory_mb, 1), "artifact_bytes": artifact_bytes,
    }, lr, precision)


def evaluate_and_finish(args, model, tokenizer, out: Path, device, result, sizes: dict, lr: float, precision: str) -> dict:
    """Summaries of the evaluation split by the best model, ROUGE, and the run's metrics.json."""
    from eval.results import finish_run
    from prompting.dialogsum import load_split
    from prompting.generate import generate_summaries
    from prompting.templates import zero_shot_prompt

    examples = load_split(args.data, args.split, max_samples=args.max_eval_samples, seed=args.seed)
    prompts = [zero_shot_prompt(ex.dialogue) for ex in examples]
    start = time.perf_counter()
    predictions = generate_summaries(model, tokenizer, prompts, batch_size=args.batch_size,
                                     max_new_tokens=args.max_new_tokens, device=device,
                                     max_input_tokens=args.max_input_tokens)
    p = result.progress
    info = {"mode": args.mode, "model": args.model, "random_init": args.random_init, "data": args.data,
            "split": args.split, "device": device.type, "precision": precision, "lr": lr,
            "batch_size": args.batch_size, "grad_accum": args.grad_accum, "steps": p.step,
            "final_train_loss": p.losses[-1] if p.losses else None, "best_val_loss": p.best_val_loss,
            "best_step": p.best_step,  # tokens/s over the whole training time, validation and checkpoints included:
            "tokens_per_s": round(p.tokens / max(p.train_seconds, 1e-9), 1),
            "skipped_steps": p.skipped_steps, **sizes, "generate_seconds": round(time.perf_counter() - start, 1)}
    if args.mode == "lora":
        info["lora"] = {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
                        "targets": args.lora_targets, "rslora": args.rslora}
        if args.merge:
            from lora.inject import unload_lora

            merged = unload_lora(model, merge=True)
            merged.save_pretrained(out / "merged_model")
            tokenizer.save_pretrained(out / "merged_model")
    return finish_run(out, examples, prompts, predictions, info, use_stemmer=args.stemmer)

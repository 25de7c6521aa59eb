"""`python run.py --mode full|lora`: fine-tune FLAN-T5 on DialogSum's train split, validate, then evaluate.

The wiring only; each piece lives in its own file: the model (prompting/model.py), LoRA (lora/inject.py), the data
(prompting/dialogsum.py, train_loop/tokenize.py, train_loop/batching.py), the loop (train_loop/loop.py), the
summaries (prompting/generate.py) and the scores (eval/results.py). Every bad flag is rejected before anything
slow starts; the other folders are imported where they are used.

Default learning rates follow the course labs (docs/NOTES.md): LoRA 1e-3; full fine-tuning 1e-4 for small models
(d_model <= 512, flan-t5-small) and 1e-5 for base and larger. The model saved and evaluated at the end is the one
with the lowest validation loss (the Trainer's `load_best_model_at_end=True`).

Under `torchrun` the same function runs in every process (train_loop/distributed.py): each trains on its share of
every batch and summarises its share of the dialogues; rank 0 alone prepares the folder, prints and writes.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import torch

from train_loop import checkpoint as ckpt
from train_loop import dist_checkpoint, distributed
from train_loop.distributed import Parallel
from train_loop.log import CURVE_FILE, LOG_FILE, plot_loss_curve
from train_loop.loop import TrainConfig, train
from train_loop.optim import OptimConfig
from train_loop.precision import choose_precision
from train_loop.run_folder import check_disk_space, prepare_folder, save_model


def default_lr(mode: str, d_model: int) -> float:
    return 1e-3 if mode == "lora" else (1e-4 if d_model <= 512 else 1e-5)


def check_args(args) -> None:
    """The flags that can be judged without a model; each error names its flag and what to do."""
    positive = {"--batch-size": args.batch_size, "--grad-accum": args.grad_accum, "--lora-r": args.lora_r,
                "--max-new-tokens": args.max_new_tokens, "--max-input-tokens": args.max_input_tokens,
                "--max-target-tokens": args.max_target_tokens, "--num-beams": getattr(args, "num_beams", 1)}
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
    if getattr(args, "adapter", None):
        raise ValueError("--adapter summarises with an adapter already trained: use it with --mode zero-shot "
                         "(or one-shot / few-shot)")
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's; checked here, before any process waits on another
    if args.batch_size % processes:
        raise ValueError(f"--batch-size {args.batch_size} is the global batch: it must split evenly over the "
                         f"{processes} processes")


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


def encoded_batches(args, tokenizer, split: str, max_samples, parallel: Parallel = Parallel()):
    """(encoded examples, function epoch -> list of this process's collated batches) for one split."""
    from prompting.dialogsum import load_split
    from train_loop.batching import collate, length_grouped_batches
    from train_loop.tokenize import encode_for_training

    examples = load_split(args.data, split, max_samples=max_samples, seed=args.seed)
    if len(examples) < parallel.world_size:  # a batch with fewer examples than processes is left out (batching.py)
        flag = "--max-train-samples" if split == "train" else "--max-val-samples"
        raise ValueError(f"{flag} {max_samples}: {len(examples)} {split} dialogue(s) make no batch for "
                         f"{parallel.world_size} processes; use at least {parallel.world_size}")
    enc = encode_for_training(examples, tokenizer, max_input_tokens=args.max_input_tokens,
                              max_target_tokens=args.max_target_tokens)
    lengths = [len(ids) for ids in enc.input_ids]

    def batches_for_epoch(epoch: int) -> list[dict]:
        groups = length_grouped_batches(lengths, args.batch_size, seed=args.seed, epoch=epoch, rank=parallel.rank,
                                        world_size=parallel.world_size)
        return [collate([enc.input_ids[i] for i in g], [enc.labels[i] for i in g], pad_id=tokenizer.pad_token_id)
                for g in groups]
    return enc, batches_for_epoch


def build_model(args):
    """(model, tokenizer): pretrained (or random with --random-init), with LoRA injected in --mode lora.
    Loading goes through the prompting modes' loader, so a missing folder or an unreachable hub reads the same."""
    from prompting.run_prompting import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model, args.random_init, args.seed)
    torch.manual_seed(args.seed)
    if args.mode == "lora":
        from lora.inject import add_lora

        add_lora(model, targets=tuple(t.strip() for t in args.lora_targets.split(",")), r=args.lora_r,
                 alpha=args.lora_alpha, dropout=args.lora_dropout, use_rslora=args.rslora)
    return model, tokenizer


def speed_up_on_cpu(model, device: torch.device) -> None:
    """On CPU only: the same math in fewer passes (train_loop/cpu_kernels.py), and freed pages reused instead of
    faulted in fresh every step (train_loop/cpu_memory.py). bench/train_sides.py calls this too."""
    from train_loop.cpu_kernels import use_cpu_kernels
    from train_loop.cpu_memory import keep_freed_memory

    use_cpu_kernels(model, device)
    if device.type == "cpu":
        keep_freed_memory()


def run(args) -> dict:
    """Train, evaluate and write the run folder; returns the metrics (on every process)."""
    check_args(args)
    from prompting.model import resolve_device

    parallel, device = distributed.start(resolve_device(args.device), fsdp=args.fsdp)
    try:
        return train_and_evaluate(args, parallel, device)
    except Exception as err:
        if not (parallel.distributed and distributed.lost_peer(err)):
            raise
        raise distributed.PeerLost(stopped_message(args, parallel, err)) from err
    finally:
        distributed.stop(parallel)


def stopped_message(args, parallel: Parallel, err: BaseException) -> str:
    """What rank 0 says when the run lost a process: what the backend saw, who tells more, what to do now."""
    latest = ckpt.latest_checkpoint(Path(args.output_dir or Path("runs") / args.mode)) if parallel.main else None
    seen = re.sub(r"^\[[^\]]*\] ", "", (str(err).strip().splitlines() or [type(err).__name__])[0])  # gloo's source line
    return (f"the run on {parallel.world_size} processes stopped ({seen.split('. ')[0][:200]}). When another process "
            f"failed, torchrun's report names it and shows its error. "
            + (f"The last complete checkpoint is {latest}: rerun the same command with --resume to continue"
               if latest else "No checkpoint was written yet: rerun the same command"))


def train_and_evaluate(args, parallel: Parallel, device: torch.device) -> dict:
    from prompting.model import count_parameters

    precision, precision_reason = choose_precision(args.precision, device)
    out = parallel.run_on_main(lambda: prepare_folder(args, parallel))

    model, tokenizer = build_model(args)
    speed_up_on_cpu(model, device)
    lr = args.lr or default_lr(args.mode, model.config.d_model)
    config = training_config(args, lr, precision)
    trainable, total = count_parameters(model)
    parallel.run_on_main(lambda: check_disk_space(out, trainable, total, args.mode))
    if parallel.main:
        shares = f" on {parallel.world_size} processes ({args.batch_size // parallel.world_size} each)"
        print(f"{args.mode} fine-tuning of {args.model}: {trainable:,} of {total:,} parameters trainable; "
              f"lr {lr:g}{'' if args.lr else ' (default)'}, batch {args.batch_size} x {args.grad_accum}"
              f"{shares if parallel.distributed else ''}{', FSDP' if parallel.fsdp else ''}, {device.type}; "
              f"{precision_reason}; writing to {out}")

    _, batches_for_epoch = encoded_batches(args, tokenizer, "train", args.max_train_samples, parallel)
    _, val_batches_for_epoch = encoded_batches(args, tokenizer, "validation", args.max_val_samples, parallel)
    result = train(model, batches_for_epoch, config, device, folder=out, val_batches=val_batches_for_epoch(0),
                   resume=args.resume, fingerprint=run_fingerprint(args, lr, precision), parallel=parallel)
    if parallel.main:
        plot_loss_curve(out / LOG_FILE, out / CURVE_FILE, title=f"{args.mode}: {args.model}")
    if result.interrupted:
        if parallel.main:
            print(f"stopped after step {result.progress.step}; checkpoint {result.checkpoint}; --resume continues")
        raise KeyboardInterrupt
    if result.progress.skipped_steps and parallel.main:
        print(f"fp16: the GradScaler skipped {result.progress.skipped_steps} of {result.progress.step} steps "
              f"(inf/NaN gradients); see train_log.jsonl")
    if parallel.fsdp:  # generation needs whole weights: a fresh, unsharded model with the trained ones (sharding.py)
        final = dist_checkpoint.trainable_weights(model)
        model = build_model(args)[0].to(device)
        dist_checkpoint.send_weights(parallel, model, final)
    dist_checkpoint.load_best(parallel, out, model)
    artifact_bytes = parallel.run_on_main(lambda: save_model(args, model, tokenizer, out))
    return evaluate_and_finish(args, model, tokenizer, out, device, result, {
        "train_seconds": round(result.progress.train_seconds, 1), "trainable_params": trainable,
        "total_params": total, "peak_memory_mb": round(result.peak_memory_mb, 1), "artifact_bytes": artifact_bytes,
        "precision_reason": precision_reason,
    }, lr, precision, parallel)


def evaluate_and_finish(args, model, tokenizer, out: Path, device, result, sizes: dict, lr: float, precision: str,
                        parallel: Parallel = Parallel()) -> dict:
    """Summaries of the evaluation split by the best model, ROUGE, and the run's metrics.json.

    On N processes each summarises every N-th dialogue, in batches of --batch-size / N; rank 0 gathers them back
    in order and scores them all: one ROUGE, as one process would compute it."""
    from eval.results import finish_run
    from prompting.dialogsum import load_split
    from prompting.generate import generate, mean_length
    from prompting.prompts import build_prompts
    from train_loop.machine import describe_machine

    examples = load_split(args.data, args.split, max_samples=args.max_eval_samples, seed=args.seed)
    # The zero-shot prompt the model was trained on, cut inside the template as in training (train_loop/tokenize.py)
    prompts = build_prompts(examples, tokenizer, shots=0, seed=args.seed, max_tokens=args.max_input_tokens).prompts
    start = time.perf_counter()
    num_beams = getattr(args, "num_beams", 1)
    mine = generate(model, tokenizer, parallel.share(prompts), batch_size=args.batch_size // parallel.world_size,
                    max_new_tokens=args.max_new_tokens, device=device, max_input_tokens=args.max_input_tokens,
                    progress=parallel.main, precision=precision, num_beams=num_beams)
    predictions, lengths = parallel.gather_shares(mine.texts), parallel.gather_shares(mine.lengths)
    p = result.progress
    info = {"mode": args.mode, "model": args.model, "random_init": args.random_init, "data": args.data,
            "split": args.split, "device": device.type, "machine": describe_machine(device), "precision": precision,
            "lr": lr,
            "batch_size": args.batch_size, "grad_accum": args.grad_accum, "processes": parallel.world_size,
            "fsdp": parallel.fsdp, "steps": p.step,
            "final_train_loss": p.losses[-1] if p.losses else None, "best_val_loss": p.best_val_loss,
            "best_step": p.best_step,  # tokens/s over the whole training time, validation and checkpoints included:
            "tokens_per_s": round(p.tokens / max(p.train_seconds, 1e-9), 1),
            "skipped_steps": p.skipped_steps, **sizes, "generate_seconds": round(time.perf_counter() - start, 1),
            "num_beams": num_beams, "gen_len": mean_length(lengths)}
    if args.mode == "lora":
        info["lora"] = {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
                        "targets": args.lora_targets, "rslora": args.rslora}

    def finish() -> dict:  # rank 0
        if args.mode == "lora" and args.merge:
            from lora.inject import unload_lora

            merged = unload_lora(model, merge=True)
            merged.save_pretrained(out / "merged_model")
            tokenizer.save_pretrained(out / "merged_model")
        return finish_run(out, examples, prompts, predictions, info, use_stemmer=args.stemmer)
    return parallel.run_on_main(finish)

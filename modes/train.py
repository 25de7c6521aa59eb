"""`python run.py --mode full|lora`: fine-tune FLAN-T5 on DialogSum's train split, validate, then evaluate.

The wiring only; every bad flag is rejected (modes/config.py) before anything slow starts. Default learning rates
follow the course's seeds: LoRA 1e-3; full 1e-4 for small models (d_model <= 512) and 1e-5 for base and larger.
The model saved and evaluated is the one with the lowest validation loss (the Trainer's `load_best_model_at_end`).
Full fine-tuning saves a `save_pretrained` folder, LoRA the adapter in peft's format.

One process is the plain path: `ddp` is None. Under torchrun (WORLD_SIZE > 1) it is distributed.py's `Parallel`:
each process trains on its share of every batch and summarises its share of the dialogues; rank 0 alone prepares
the folder, prints and writes.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from eval.evaluate import finish_run, plot_loss_curve
from modes.config import DataConfig, RunConfig, check_disk_space, prepare_folder, run_config
from prompting.dialogsum import load_split
from prompting.model import count_parameters, generate, load_model_and_tokenizer, mean_length, resolve_device
from prompting.prompts import build_prompts
from train_loop import checkpoint as ckpt
from train_loop.data import batches_by_epoch, check_batch_split
from train_loop.loop import LOG_FILE, read_log, train
from train_loop.memory import MemoryLedger
from train_loop.precision import choose_precision, describe_machine


def default_lr(mode: str, d_model: int) -> float:
    """The course's seeds (LoRA 1e-3; full 1e-4 for flan-t5-small, 1e-5 for base and up), and 3e-3 / 1e-3 for a
    model narrower than 256 such as models/baby-flan-t5: pretrained for 48 minutes, it starts far weaker, and
    at 1e-4 full fine-tuning had only reached a train loss of 4.3 after 500 steps of 8 (1e-3: 2.8 after 90),
    its summaries one phrase repeated (docs/pretraining.md)."""
    if d_model < 256:
        return 3e-3 if mode == "lora" else 1e-3
    return 1e-3 if mode == "lora" else (1e-4 if d_model <= 512 else 1e-5)


def examples_for(data: DataConfig, split: str, processes: int) -> list:
    """The train or validation dialogues (--max-train/val-samples of them), at least one for every process: a batch
    with fewer examples than processes is left out (train_loop/data.py), and an empty epoch trains nothing."""
    limit, flag = ((data.max_train_samples, "--max-train-samples") if split == "train"
                   else (data.max_val_samples, "--max-val-samples"))
    examples = load_split(data.source, split, limit, data.seed)
    if len(examples) < processes:
        raise ValueError(f"{flag} {limit}: {len(examples)} {split} dialogue(s) make no batch for {processes} "
                         f"processes; use at least {processes}")
    return examples


def on_main(ddp, work):
    """`work()` here, or under torchrun on rank 0 only, its result (or error) told to every process."""
    return ddp.run_on_main(work) if ddp else work()


def run(args) -> dict:
    """Train, evaluate and write the run folder; returns the metrics (on every process)."""
    c = run_config(args)
    if args.merge and args.mode != "lora":
        raise ValueError("--merge merges a LoRA adapter: use it with --mode lora")
    if getattr(args, "adapter", None):
        raise ValueError("--adapter summarises with an adapter already trained: use it with --mode zero-shot "
                         "(or one-shot / few-shot)")
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's; checked before any process waits on another
    check_batch_split(args.batch_size, processes)
    device = resolve_device(args.device)
    if processes == 1:
        if args.fsdp:
            raise ValueError("--fsdp shards the model over several processes: launch run.py with "
                             "torchrun --nproc_per_node N (N >= 2)")
        return train_and_evaluate(args, c, None, device)

    from train_loop import distributed

    ddp, device = distributed.start(device, fsdp=args.fsdp)
    try:
        return train_and_evaluate(args, c, ddp, device)
    except Exception as err:
        if not distributed.lost_peer(err):
            raise
        raise distributed.peer_lost(err, ddp.world_size, ckpt.latest_checkpoint(c.out.folder) if ddp.main else None) from err
    finally:
        distributed.stop(ddp)


def build_model(args, lora):
    """(model, tokenizer): pretrained (or random with --random-init), with LoRA injected in --mode lora."""
    model, tokenizer = load_model_and_tokenizer(args.model, args.random_init, args.seed)
    torch.manual_seed(args.seed)  # full: the dropout masks start from --seed
    if args.mode == "lora":
        from lora.layer import add_lora

        add_lora(model, lora)  # reseeds with lora.init_seed: A the same in every process and on every resume
    return model, tokenizer


def train_and_evaluate(args, c: RunConfig, ddp, device) -> dict:
    main, world = (ddp.main, ddp.world_size) if ddp else (True, 1)
    precision, precision_reason = choose_precision(args.precision, device)
    out = on_main(ddp, lambda: prepare_folder(c.out.folder, args.mode, args.model, c.out.overwrite,
                                              c.out.resume, world, args.fsdp))
    model, tokenizer = build_model(args, c.lora)
    if args.cpu_kernels and device.type == "cpu":
        from train_loop.cpu_speed import speed_up_on_cpu

        speed_up_on_cpu(model)
    lr = args.lr or default_lr(args.mode, model.config.d_model)
    config = replace(c.train, optim=replace(c.train.optim, lr=lr), precision=precision)
    trainable, total = count_parameters(model)
    on_main(ddp, lambda: check_disk_space(out, trainable, total, args.mode))
    if main:
        shares = f" on {world} processes ({args.batch_size // world} each)" if ddp else ""
        print(f"{args.mode} fine-tuning of {args.model}: {trainable:,} of {total:,} parameters trainable; "
              f"lr {lr:g}{'' if args.lr else ' (default)'}, batch {args.batch_size} x {args.grad_accum}"
              f"{shares}{', FSDP' if args.fsdp else ''}, {device.type}; {precision_reason}; writing to {out}")

    data, rank = c.data, ddp.rank if ddp else 0
    batches = {split: batches_by_epoch(examples_for(data, split, world), tokenizer, args.batch_size, data.seed,
                                       data.max_input_tokens, data.max_target_tokens, rank, world)
               for split in ("train", "validation")}
    # What a checkpoint must share with this run to be resumed by it (the loop adds steps, shapes, processes).
    fingerprint = {"mode": args.mode, "model": args.model, "random_init": args.random_init, "data": data.source,
                   "seed": data.seed, "samples": [data.max_train_samples, data.max_val_samples],
                   "tokens": [data.max_input_tokens, data.max_target_tokens],
                   "batch_size": args.batch_size, "precision": precision, "optim": asdict(config.optim),
                   "epochs": config.epochs, "max_grad_norm": config.max_grad_norm,
                   "lora": asdict(c.lora) if args.mode == "lora" else None}
    if not (ddp and ddp.fsdp):  # on the device before the ledger reads it (FSDP moves only each process's shards)
        model.to(device)
    with MemoryLedger(model, device) as ledger:  # weights, gradients, optimiser state, the rest (memory.py)
        result = train(model, batches["train"], config, device, folder=out, val_batches=batches["validation"](0),
                       resume=c.out.resume, fingerprint=fingerprint, ddp=ddp)
    memory = ledger.result()
    if main:
        plot_loss_curve(read_log(out / LOG_FILE), out / "loss_curve.png", title=f"{args.mode}: {args.model}")
    if result.interrupted:
        if main:
            print(f"stopped after step {result.progress.step}; checkpoint {result.checkpoint}; --resume continues")
        raise KeyboardInterrupt
    if result.progress.skipped_steps and main:
        print(f"fp16: the GradScaler skipped {result.progress.skipped_steps} of {result.progress.step} steps "
              f"(inf/NaN gradients); see train_log.jsonl")
    if ddp and ddp.fsdp:  # generation needs whole weights: a fresh, unsharded model with the trained ones (sharding.py)
        from train_loop.dist_checkpoint import send_weights, trainable_weights

        final = trainable_weights(model)
        model = build_model(args, c.lora)[0].to(device)
        send_weights(model, final)
    (ddp.checkpoints if ddp else ckpt).load_best(out, model)
    artifact_bytes = on_main(ddp, lambda: save_model(model, tokenizer, out, args.mode, args.model))
    p = result.progress
    info = {"mode": args.mode, "model": args.model, "random_init": args.random_init, "data": data.source,
            "split": data.split, "device": device.type, "machine": describe_machine(device), "precision": precision,
            "precision_reason": precision_reason, "lr": lr,
            "batch_size": args.batch_size, "grad_accum": args.grad_accum, "processes": world, "fsdp": args.fsdp,
            "steps": p.step, "final_train_loss": p.losses[-1] if p.losses else None, "best_val_loss": p.best_val_loss,
            "best_step": p.best_step,  # tokens/s over the whole training time, validation and checkpoints included:
            "tokens_per_s": round(p.tokens / max(p.train_seconds, 1e-9), 1), "skipped_steps": p.skipped_steps,
            "train_seconds": round(p.train_seconds, 1), "trainable_params": trainable, "total_params": total,
            "peak_memory_mb": round(result.peak_memory_mb, 1), "memory_ledger": memory, "artifact_bytes": artifact_bytes,
            **({"lora": asdict(c.lora)} if args.mode == "lora" else {})}
    return evaluate(args, c, model, tokenizer, out, device, info, ddp)


def evaluate(args, c: RunConfig, model, tokenizer, out, device, info: dict, ddp) -> dict:
    """Summaries of the evaluation split by the best model, ROUGE, metrics.json. On N processes each summarises
    every N-th dialogue; rank 0 gathers them back in order and scores them all, as one process would."""
    data, gen = c.data, c.gen
    examples = load_split(data.source, data.split, max_samples=data.max_eval_samples, seed=data.seed)
    # The zero-shot prompt the model was trained on, cut inside the template as in training (train_loop/data.py)
    prompts = build_prompts(examples, tokenizer, shots=0, seed=data.seed, max_tokens=data.max_input_tokens).prompts
    start = time.perf_counter()
    mine = generate(model, tokenizer, ddp.share(prompts) if ddp else prompts,
                    batch_size=gen.batch_size // (ddp.world_size if ddp else 1),
                    max_new_tokens=gen.max_new_tokens, device=device, max_input_tokens=data.max_input_tokens,
                    progress=ddp is None or ddp.main, precision=info["precision"], num_beams=gen.num_beams)
    predictions = ddp.gather_shares(mine.texts) if ddp else mine.texts
    lengths = ddp.gather_shares(mine.lengths) if ddp else mine.lengths
    info["generate_seconds"] = round(time.perf_counter() - start, 1)
    info["num_beams"], info["gen_len"] = gen.num_beams, mean_length(lengths)

    def finish() -> dict:  # rank 0
        if args.merge:
            from lora.merge import unload_lora

            merged = unload_lora(model, merge=True)
            merged.save_pretrained(out / "merged_model")
            tokenizer.save_pretrained(out / "merged_model")
        return finish_run(out, examples, prompts, predictions, info, use_stemmer=gen.use_stemmer)
    return on_main(ddp, finish)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_model(model, tokenizer, out: Path, mode: str, base_model: str) -> int:
    """Full: a `save_pretrained` folder transformers loads. LoRA: the adapter in peft's format, naming `base_model`.
    Returns its bytes."""
    if mode == "full":
        model.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
        return folder_bytes(out / "model")
    from lora.adapter_file import save_adapter

    # peft loads the base model from this name: a hub id as given, a local folder as an absolute path (a relative
    # one would point elsewhere as soon as the adapter is loaded from another working directory)
    local = Path(base_model).expanduser()
    base = str(local.resolve()) if local.exists() else base_model
    save_adapter(model, out / "adapter", base_model_name_or_path=base)
    return folder_bytes(out / "adapter")

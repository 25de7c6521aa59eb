"""`python run.py --mode full|lora`: fine-tune FLAN-T5 on a train split, validate, then evaluate.

`run` takes the `TrainRun` that modes/train_config.py's `config_from_args` built from the flags (run.py and
modes/compare.py import the pair from here); nothing below reads the command line. The model saved and evaluated
has the lowest validation loss (the Trainer's `load_best_model_at_end`), or with `--select-by rouge1|...` the
highest validation ROUGE, the validation dialogues summarised as the evaluation will summarise
(train_loop/val_rouge.py): full fine-tuning saves it with `save_pretrained`, LoRA its adapter in peft's format, each
with the prompt template it learned (`prompt.json`, read back by `--adapter` and `--model`). `processes` is
loop.py's `OneProcess`, or under torchrun distributed.py's `Parallel`: each process trains on its share of every
batch and summarises its share of the dialogues; rank 0 alone prepares the folder, prints and writes.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import torch

from eval.evaluate import as_record, finish_run, plot_loss_curve
from model.device import MemoryLedger, describe_machine
from model.generate import generate, mean_length
from model.load import count_parameters, load_model_and_tokenizer
from modes.train_config import TrainRun, config_from_args, resume_fingerprint  # noqa: F401 (run.py's pair with run)
from prompting.dialogsum import DataConfig, load_data
from prompting.prompts import build_prompts, save_template
from train_loop import checkpoint as ckpt
from train_loop.data import batches_by_epoch
from train_loop.loop import LOG_FILE, OneProcess, read_log, train


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


def snapshot_info(config: TrainRun) -> dict:
    """What a snapshot file records beside its tensors: enough to rebuild W_t from it and the base model."""
    from lora.layer import lora_scaling

    lora = config.lora
    return {"method": lora.variant if lora else "full", "model": config.model, "random_init": config.random_init,
            "seed": config.seed, "quantize_base": config.quantize_base,
            "scaling": lora_scaling(lora.r, lora.alpha, lora.use_rslora) if lora else None}


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

"""`python run.py --mode pretrain`: make a small FLAN-style T5 from scratch (pretrain/), the model the study runs on
when no FLAN-T5 weights can be had (models/baby-flan-t5/).

The architecture is `--model`'s config.json (T5 v1.1's layout: gated-GELU, untied head; FLAN-T5's tokenizer), every
weight random, no dropout (T5 v1.1 pretrains without). The data is DialogSum's train split as pretrain/mixture.py
streams it: span corruption and instructions that are not summarisation; `--max-val-samples` train dialogues
(default 256) are held out of the stream to measure the validation loss on. Then it is full training like any other:
the project's loop, checkpoints (`--save-every`, `--resume`), precision rule and run folder. The weights with the
lowest validation loss are saved in bf16 (half the bytes; every mode loads them as fp32) as `model/`, with a model
card that says how they were made.
"""
from __future__ import annotations

import hashlib
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from eval.evaluate import as_record, plot_loss_curve, write_json_atomic
from model.device import choose_precision, describe_machine, resolve_device
from model.load import build_from_config, check_model_folder, count_parameters, load_tokenizer
from pretrain.mixture import Text, pretraining_batches
from prompting.dialogsum import DataConfig, load_split
from train_loop import checkpoint as ckpt
from modes.train_config import data_config, train_config
from train_loop.data import check_batch_split
from train_loop.loop import LOG_FILE, TrainConfig, read_log, train

DEFAULT_OPTIMIZER = "adafactor"  # T5's and FLAN-T5's (train_loop/step.py says why AdamW suits T5's init badly)
DEFAULT_LR = {"adafactor": 1e-2, "adamw": 1e-3}  # Adafactor's rate is relative: times each weight's RMS
OPTIMIZER_NAMES = {"adafactor": "Adafactor", "adamw": "AdamW"}
HELD_OUT = 256  # train dialogues kept out of the stream for the validation loss, unless --max-val-samples says


@dataclass(frozen=True)
class PretrainRun:
    """Everything a pretraining run is told; metrics.json records all of it, the fingerprint all but NOT_TRAINING."""
    model: str                       # the folder whose config.json gives the architecture (and the tokenizer)
    data: DataConfig                 # its train split only; max_val_samples: the dialogues held out
    held_out: int
    batch_size: int
    train: TrainConfig
    output_dir: Path
    overwrite: bool
    resume: bool
    device: str
    precision_reason: str
    cpu_kernels: bool


NOT_TRAINING = ("data.split", "data.max_eval_samples", "output_dir", "overwrite", "resume", "device",
                "precision_reason", "train.save_every", "train.progress_bar")


def config_from_args(args) -> PretrainRun:
    if args.random_init or args.adapter or args.merge:
        raise ValueError("--mode pretrain always starts from random weights and trains them all: leave out "
                         "--random-init, --adapter and --merge")
    check_model_folder(args.model, need_weights=False)
    data = data_config(args)
    if data.own_files:
        raise ValueError("--mode pretrain reads DialogSum's train dialogues (--data FOLDER or hub id); your own "
                         "files are for --mode full|lora, zero-shot, check-data and summarise")
    check_batch_split(args.batch_size, 1)
    device = resolve_device(args.device)
    precision, precision_reason = choose_precision(args.precision, device)
    optimizer = args.optimizer or DEFAULT_OPTIMIZER
    return PretrainRun(args.model, data, args.max_val_samples or HELD_OUT, args.batch_size,
                       train_config(args, args.lr or DEFAULT_LR[optimizer], precision, optimizer),
                       Path(args.output_dir or "runs/pretrain"),
                       args.overwrite, args.resume, device.type, precision_reason, args.cpu_kernels)


def texts_of_train_split(source: str, limit: int | None, seed: int) -> list[Text]:
    """The train split's dialogues and topics: all pretraining may read (never a summary, never another split)."""
    return [Text(ex.dialogue, ex.topic) for ex in load_split(source, "train", limit, seed)]


def build_model(folder: str, seed: int):
    """`folder`'s architecture with random weights, dropout off; the config keeps its dropout for fine-tuning."""
    from transformers import T5Config

    config = T5Config.from_pretrained(folder)
    fine_tuning_dropout, config.dropout_rate = config.dropout_rate, 0.0
    model = build_from_config(config, seed=seed, untied_head=True)
    model.config.dropout_rate = fine_tuning_dropout  # saved with the model; the modules built above have p = 0
    return model


def run(config: PretrainRun) -> dict:
    data, device, lr = config.data, torch.device(config.device), config.train.optim.lr
    out = ckpt.prepare_run_folder(config.output_dir, config.overwrite, config.resume, "pretrain", config.model)
    tokenizer = load_tokenizer(config.model)
    model = build_model(config.model, data.seed)
    if config.cpu_kernels and device.type == "cpu":
        from train_loop.cpu_speed import speed_up_on_cpu

        speed_up_on_cpu(model)
    trainable, total = count_parameters(model)
    ckpt.check_disk_space(out, trainable, total, "full")

    texts = texts_of_train_split(data.source, data.max_train_samples, data.seed)
    if len(texts) <= config.held_out:
        raise ValueError(f"--max-val-samples {config.held_out}: the train split has {len(texts)} dialogues; keep "
                         f"fewer out for validation")
    random.Random(data.seed).shuffle(texts)
    stream, validation = texts[config.held_out:], texts[:config.held_out]
    batches = pretraining_batches(stream, tokenizer, config.batch_size, data.seed, data.max_input_tokens,
                                  data.max_label_tokens)
    val_batches = pretraining_batches(validation, tokenizer, config.batch_size, data.seed + 1, data.max_input_tokens,
                                      data.max_label_tokens)(0)
    print(f"pretraining {config.model}'s architecture from scratch: {total:,} parameters; {len(stream):,} train "
          f"dialogues x 2 examples an epoch ({config.held_out} held out), batch {config.batch_size}, lr {lr:g}, "
          f"{device.type}; {config.precision_reason}; writing to {out}", file=sys.stderr)
    record = {"mode": "pretrain", **as_record(config)}
    fingerprint = {k: v for k, v in ckpt.flat(record).items() if not k.startswith(NOT_TRAINING)}
    result = train(model, batches, config.train, device, folder=out, val_batches=val_batches, resume=config.resume,
                   fingerprint=fingerprint)
    plot_loss_curve(read_log(out / LOG_FILE), out / "loss_curve.png", title=f"pretraining: {config.model}")
    if result.interrupted:
        print(f"stopped after step {result.progress.step}; checkpoint {result.checkpoint}; --resume continues",
              file=sys.stderr)
        raise KeyboardInterrupt
    ckpt.load_best(out, model)
    p = result.progress
    info = {**record, "machine": describe_machine(device), "steps": p.step,
            "epochs": round(p.step / max(1, len(batches(0))), 3), "train_dialogues": len(stream), "tokens": p.tokens,
            "tokens_per_s": round(p.tokens / max(p.train_seconds, 1e-9), 1), "train_seconds": round(p.train_seconds, 1),
            "final_train_loss": p.losses[-1] if p.losses else None, "best_val_loss": p.best_val_loss,
            "best_step": p.best_step, "total_params": total, "peak_memory_mb": round(result.peak_memory_mb, 1),
            "command": "python run.py " + " ".join(sys.argv[1:]), "output_dir": str(out)}
    info["weights_sha256"] = save_bf16(model, tokenizer, out / "model")
    write_json_atomic(out / "metrics.json", info)
    (out / "model" / "README.md").write_text(model_card(info))
    info["printout"] = (f"pretrained {p.step} steps ({p.tokens:,} tokens, {p.train_seconds / 60:.1f} min): best "
                        f"validation loss {p.best_val_loss:.4f} at step {p.best_step}; the model is in {out}/model")
    return info


def save_bf16(model, tokenizer, folder: Path) -> str:
    """`save_pretrained` in bf16 and the tokenizer beside it; returns the weights' sha256."""
    # The head is its own (build_from_config): config.json says so, as FLAN-T5's does, which is what tells
    # model/load.py to keep it untied. transformers 5's T5Config forces True on load whatever the file says, and then
    # warns that the checkpoint's shared.weight and lm_head.weight differ and leaves them untied, as for FLAN-T5 itself.
    model.config.tie_word_embeddings = False
    model.to(torch.bfloat16).save_pretrained(folder)
    model.float()
    tokenizer.save_pretrained(folder)
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def model_card(info: dict) -> str:
    minutes, optim = info["train_seconds"] / 60, info["train"]["optim"]
    return f"""# baby-flan-t5: a small FLAN-style T5 pretrained on DialogSum's train dialogues

Made by this project's `--mode pretrain` (modes/pretrain.py, pretrain/): T5 v1.1's layout (gated-GELU, untied
head), FLAN-T5's tokenizer, {info['total_params']:,} parameters, stored in bf16.

| | |
| --- | --- |
| command | `{info['command']}` |
| data | DialogSum train: {info['train_dialogues']:,} dialogues, each epoch one span-corruption example (15% of tokens, mean span 3) and one instruction (topic, speaker, continuation) per dialogue; {info['held_out']} held out for the validation loss. No summary of any split, no validation or test dialogue |
| steps | {info['steps']:,} of batch {info['batch_size']} ({info['epochs']} epochs), lr {optim['lr']:g}, {optim['warmup_steps']} warmup steps, {optim['schedule']} schedule, {OPTIMIZER_NAMES[optim['optimizer']]}, seed {info['data']['seed']} |
| tokens | {info['tokens']:,} (inputs + labels, no padding), {info['tokens_per_s']:,.0f} per second |
| time | {minutes:.1f} minutes of training |
| machine | {info['machine']}; {info['train']['precision']} ({info['precision_reason']}) |
| final losses | train {info['final_train_loss']:.4f}; best validation {info['best_val_loss']:.4f} (step {info['best_step']}) |
| weights sha256 | `{info['weights_sha256']}` |

Licences: the tokenizer is FLAN-T5's (google/flan-t5-small), Apache-2.0; the weights are trained on DialogSum
(Chen et al. 2021), CC BY-NC-SA 4.0, and carry its terms: non-commercial, share alike, attribution.

It knows dialogues, not the world: a baby model for learning how fine-tuning works, far below FLAN-T5.
"""

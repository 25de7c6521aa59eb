"""The stack people would otherwise use for training: `Seq2SeqTrainer` (+ `peft` for LoRA).

Two recipes, both on the same examples and hyper-parameters as our loop:

* `best`: the trainer at its best: dynamic padding (`DataCollatorForSeq2Seq`), length grouping
  (`train_sampling_strategy="group_by_length"`), in the precision our side runs in (`precision`: 'bf16' sets the
  Trainer's `bf16=True`, its autocast; chosen once by model/device.py for both stacks).
* `seeds`: the course notebooks' recipe: fp32, every input padded to 512 tokens and every summary to 128.
  (The notebooks also pad labels with 0, a known flaw; here padding labels are -100 so the losses are comparable.
  Throughput does not depend on it.)

Used by bench/bench_train.py, one recipe per fresh process so that peak memory is the recipe's own.
"""
from __future__ import annotations

import time

import torch

from train_loop.data import IGNORE_INDEX  # -100, what the Trainer's collator pads labels with


class _CountingCollator:
    """Wraps a collator and records the real (non-padding) tokens of every batch it builds, inputs plus labels."""

    def __init__(self, inner):
        self.inner = inner
        self.real_tokens: list[int] = []

    def __call__(self, features):
        batch = self.inner(features)
        real = int(batch["attention_mask"].sum()) + int((batch["labels"] != IGNORE_INDEX).sum())
        self.real_tokens.append(real)
        return batch


def run_trainer(model, tokenizer, prompts, summaries, *, recipe, lora, steps, batch_size, lr, warmup_steps_timed,
                lora_r=32, lora_alpha=32, lora_dropout=0.05, seed=42, output_dir="/tmp/bench-trainer",
                precision="fp32", encoded=None):
    """Train `steps` optimiser steps with Seq2SeqTrainer; return losses, step times and real tokens per step.
    `precision` ('fp32', 'bf16' or 'fp16') applies to the `best` recipe; the seeds' recipe is fp32 by definition.
    `encoded` = (input ids, label ids), lists of token ids, replaces `prompts` and `summaries` (pretraining's
    span-corruption and instruction examples, bench/bench_pretrain.py)."""
    from datasets import Dataset
    from transformers import (DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback)

    pad_all = recipe == "seeds"
    if encoded is not None:
        inputs, labels = encoded
        enc = {"input_ids": inputs, "attention_mask": [[1] * len(ids) for ids in inputs]}
    else:
        enc = tokenizer(prompts, max_length=512, truncation=True, padding="max_length" if pad_all else False)
        tgt = tokenizer(text_target=summaries, max_length=128, truncation=True,
                        padding="max_length" if pad_all else False)
        labels = [[t if t != tokenizer.pad_token_id else IGNORE_INDEX for t in row] for row in tgt["input_ids"]]
    dataset = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                 "labels": labels})

    if lora:
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=lora_r, lora_alpha=lora_alpha,
                                                 lora_dropout=lora_dropout, target_modules=["q", "v"]))

    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision {precision!r}: expected fp32, bf16 or fp16 (already chosen for the device)")
    precision = precision if recipe == "best" else "fp32"
    args = Seq2SeqTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=batch_size, learning_rate=lr, max_steps=steps,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.01, max_grad_norm=1.0,
        train_sampling_strategy="group_by_length" if recipe == "best" else "random",
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not torch.cuda.is_available(), logging_steps=1, save_strategy="no",
        report_to=[], seed=seed, dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
    )
    collator = _CountingCollator(DataCollatorForSeq2Seq(tokenizer, model=None, label_pad_token_id=IGNORE_INDEX))

    step_ends: list[float] = []
    step_cpu_ends: list[float] = []  # this process's CPU time: what contention from other jobs does not inflate
    losses: list[float] = []

    class _Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            step_ends.append(time.perf_counter())
            step_cpu_ends.append(time.process_time())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                             processing_class=tokenizer, callbacks=[_Clock()])
    trainer.train()
    # The dataloader may build one batch ahead; step i consumed batch i.
    timed = slice(warmup_steps_timed, steps)
    seconds = step_ends[steps - 1] - step_ends[warmup_steps_timed - 1]
    cpu_seconds = step_cpu_ends[steps - 1] - step_cpu_ends[warmup_steps_timed - 1]
    tokens = sum(collator.real_tokens[timed])
    return {"losses": losses, "seconds": seconds, "cpu_seconds": cpu_seconds, "real_tokens": tokens,
            "tokens_per_s": tokens / seconds, "precision": precision}

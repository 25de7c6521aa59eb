"""The loop learns on real data: 64 DialogSum dialogues, the real FLAN-T5 tokenizer and prompt, a few epochs ->
lower validation loss on held-out dialogues, in full and in LoRA mode.

The model is flan-t5-small's configuration (vocabulary, gated-GELU, relative attention, untied head) narrowed
to d_model 128 and 2+2 blocks, with random weights (the tests never download weights): small
enough for CI on 2 cores, and the 32,128-way output layer is the real one. Inputs are cut to 128 tokens.
"""
import json

import torch
from transformers import T5Config

from model.load import build_from_config, load_tokenizer
from prompting.dialogsum import open_text
from tests.conftest import DATA_DIR, SMALL_DIR
from train_loop.loop import TrainConfig, train, validation_loss
from train_loop.step import OptimConfig

CPU = torch.device("cpu")
PROMPT = "Summarize the following conversation.\n\n{}\n\nSummary: "  # the course's zero-shot / fine-tuning prompt


def encoded(tokenizer, file: str, count: int) -> list[tuple[list[int], list[int]]]:
    """A few rows of the official jsonl, tokenised; stands in for prompting.dialogsum + train_loop.data."""
    with open_text(next(DATA_DIR.glob(file + '*'))) as f:  # .jsonl, or .jsonl.gz as the repository ships it
        rows = [json.loads(line) for line, _ in zip(f, range(count))]
    return [(tokenizer(PROMPT.format(r["dialogue"]), max_length=128, truncation=True).input_ids,
             tokenizer(r["summary"], max_length=48, truncation=True).input_ids) for r in rows]


def padded(pairs, batch_size: int = 8) -> list[dict]:
    batches = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        s, t = max(len(x) for x, _ in chunk), max(len(y) for _, y in chunk)
        batches.append({
            "input_ids": torch.tensor([x + [0] * (s - len(x)) for x, _ in chunk]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (s - len(x)) for x, _ in chunk]),
            "labels": torch.tensor([y + [-100] * (t - len(y)) for _, y in chunk]),
        })
    return batches


def small_model():
    config = T5Config.from_pretrained(SMALL_DIR)
    config.update(dict(d_model=128, d_ff=256, num_heads=4, d_kv=32, num_layers=2, num_decoder_layers=2))
    return build_from_config(config, seed=0)


def learn(model) -> tuple[float, float]:
    tokenizer = load_tokenizer(SMALL_DIR)
    batches = padded(encoded(tokenizer, "dialogsum.train.jsonl", 64))
    val = padded(encoded(tokenizer, "dialogsum.dev.jsonl", 16))
    before = validation_loss(model, val, "fp32", CPU)
    config = TrainConfig(optim=OptimConfig(lr=1e-3, weight_decay=0.01), max_steps=16, progress_bar=False)
    result = train(model, lambda epoch: batches, config, CPU, val_batches=val)  # 8 steps an epoch, 2 epochs
    assert result.progress.losses[-1] < result.progress.losses[0]
    return before, result.progress.val_losses[-1][1]


def test_full_fine_tuning_lowers_validation_loss_on_dialogsum():
    before, after = learn(small_model())
    assert after < before - 1.0, (before, after)


def test_lora_fine_tuning_lowers_validation_loss_on_dialogsum():  # waits on the lora/ merge
    from lora.layer import LoRAConfig, add_lora

    model = small_model()
    add_lora(model, LoRAConfig(targets=("q", "v"), r=8, alpha=16, dropout=0.0))
    before, after = learn(model)
    assert after < before - 0.3, (before, after)

"""Small pieces the training-loop tests share: padded random batches, a tiny model, a quick config."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from model.load import build_from_config
from tests.conftest import SMALL_DIR, tiny_t5_config
from train_loop.loop import TrainConfig
from train_loop.step import OptimConfig


def random_batches(count: int, batch_size: int = 3, vocab: int = 128, seed: int = 0) -> list[dict]:
    """Padded batches shaped like train_loop.data.collate's: rows of different lengths, so that micro-batches
    hold different numbers of label tokens (that is what tells a per-token mean from a mean of means)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        src, tgt = int(torch.randint(4, 13, (1,), generator=g)), int(torch.randint(3, 9, (1,), generator=g))
        input_ids = torch.randint(2, vocab, (batch_size, src), generator=g)
        attention_mask = torch.ones_like(input_ids)
        labels = torch.randint(2, vocab, (batch_size, tgt), generator=g)
        for row in range(batch_size):
            n_in = int(torch.randint(2, src + 1, (1,), generator=g))
            input_ids[row, n_in:], attention_mask[row, n_in:] = 0, 0
            n_out = int(torch.randint(1, tgt + 1, (1,), generator=g))
            labels[row, n_out - 1], labels[row, n_out:] = 1, -100  # eos, then padding
        batches.append({"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels})
    return batches


def tiny_model(seed: int = 1, **overrides):
    return build_from_config(tiny_t5_config(**overrides), seed=seed)


def quick_config(**overrides) -> TrainConfig:
    optim = dict(lr=3e-3, weight_decay=0.01, warmup_steps=3)
    optim.update(overrides.pop("optim", {}))
    settings = dict(optim=OptimConfig(**optim), max_steps=20, grad_accum=2, max_grad_norm=1.0, progress_bar=False)
    settings.update(overrides)
    return TrainConfig(**settings)


def max_weight_difference(a: torch.nn.Module, b: dict[str, torch.Tensor] | torch.nn.Module) -> float:
    other = b.state_dict() if isinstance(b, torch.nn.Module) else b
    return max((p - other[n]).abs().max().item() for n, p in a.state_dict().items())


def narrow_model(parent: Path) -> Path:
    """flan-t5-small's tokenizer with its config narrowed to d_model 64 and 1+1 blocks: a run.py run in seconds."""
    folder = parent / "narrow-flan-t5"
    folder.mkdir()
    for name in ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(SMALL_DIR / name, folder / name)
    config = json.loads((SMALL_DIR / "config.json").read_text())
    config.update(d_model=64, d_ff=128, num_heads=2, d_kv=32, num_layers=1, num_decoder_layers=1)
    (folder / "config.json").write_text(json.dumps(config))
    return folder

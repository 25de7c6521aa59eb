"""Shared fixtures: where ../shared lives, and a tiny T5 that builds in milliseconds."""
import os
from pathlib import Path

import pytest
import torch

# Nothing may reach the Hugging Face hub from these machines: fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))
DATA_DIR = SHARED / "data" / "dialogsum"
COURSE_DIR = DATA_DIR.parent / "course"  # the course's dialogue-summary-training-results.csv
SMALL_DIR = SHARED / "models" / "flan-t5-small"
BASE_DIR = SHARED / "models" / "flan-t5-base"


def tiny_t5_config(**overrides):
    """A T5 small enough for exact float64 checks; decoder_start_token_id must be set (FACTS.md)."""
    from transformers import T5Config

    settings = dict(
        vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    settings.update(overrides)
    return T5Config(**settings)


@pytest.fixture
def tiny_config():
    return tiny_t5_config()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield

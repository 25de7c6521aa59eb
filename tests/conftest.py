"""Shared fixtures: where the data and model files are (tests/resources.py), and a tiny T5 that builds in
milliseconds. Without the data and model files the run stops at once, with one message that says what to set."""
import os
import sys
from pathlib import Path

import pytest
import torch

from tests import resources

REPO = Path(__file__).resolve().parents[1]
try:  # the only step that may reach the hub: SHARED_DIR, then shared/ beside the repository, then the hub's cache
    FOUND, MISSING = resources.find(), None
except resources.Missing as err:
    FOUND, MISSING = None, str(err)
DATA_DIR = FOUND.data if FOUND else Path("<missing>/data/dialogsum")
# The course's dialogue-summary-training-results.csv ships with the repository (data/course/README.md).
COURSE_DIR = REPO / "data" / "course"
SMALL_DIR = FOUND.small if FOUND else Path("<missing>/models/flan-t5-small")
BASE_DIR = FOUND.base if FOUND else Path("<missing>/models/flan-t5-base")

# From here on nothing reaches the hub: a test that tried would wait on the network instead of failing fast.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "huggingface_hub.constants" in sys.modules:  # read once at import: imported by the download above
    sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = True


def pytest_sessionstart(session):
    if MISSING:  # before any test is collected; pytest prints a UsageError as one "ERROR: ..." message, exit code 4
        raise pytest.UsageError(MISSING)


def tiny_t5_config(**overrides):
    """A T5 small enough for exact float64 checks; decoder_start_token_id must be set (a bare T5Config
    in transformers 5.x has none, and passing labels then fails)."""
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

"""The model this repository ships (models/baby-flan-t5/) and proof that fine-tuning it *works*: a short LoRA run
and a short full run each lower the validation loss and raise ROUGE over the model's own zero-shot summaries of the
same test dialogues, the full run with summaries that depend on their dialogue; its greedy summaries are pinned, so
generation cannot change silently; `--adapter` gives back the LoRA run's summaries. Everything reads the
repository only: a bare clone runs it offline."""
import csv
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

import run
from bench.pin_summaries import COUNT, MODEL, PINNED, summaries
from prompting.dialogsum import load_split
from model.load import load_model_and_tokenizer
from train_loop.data import batches_by_epoch
from train_loop.loop import validation_loss

DATA = Path(__file__).resolve().parents[1] / "data" / "dialogsum"
EVAL = ["--model", str(MODEL), "--data", str(DATA), "--split", "test", "--max-eval-samples", "24",
        "--max-new-tokens", "48", "--batch-size", "8", "--device", "cpu", "--precision", "fp32"]
TRAIN = ["--max-train-samples", "1200", "--max-val-samples", "32", "--max-input-tokens", "384", "--max-target-tokens", "64"]
STEPS = {"lora": "40", "full": "150"}  # 40 full steps were not yet enough to beat zero-shot's ROUGE (0.140 vs 0.145)


def predictions(folder: Path) -> list[str]:
    with open(folder / "predictions.csv", newline="") as f:
        return [row["prediction"] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("baby")
    assert run.main(["--mode", "zero-shot", *EVAL, "--output-dir", str(root / "zero-shot")]) == 0
    for mode in ("lora", "full"):
        assert run.main(["--mode", mode, *EVAL, *TRAIN, "--max-steps", STEPS[mode], "--output-dir", str(root / mode)]) == 0
    return {name: json.loads((root / name / "metrics.json").read_text()) | {"folder": root / name}
            for name in ("zero-shot", "lora", "full")}


def test_the_shipped_model_loads_with_transformers_and_matches_its_card():
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(MODEL)
    card = (MODEL / "README.md").read_text()
    digest = hashlib.sha256((MODEL / "model.safetensors").read_bytes()).hexdigest()
    assert f"`{digest}`" in card  # the card names the weights it describes
    total = sum(p.numel() for p in model.parameters())
    assert f"{total:,} parameters" in card
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()  # T5 v1.1: the head is its own
    assert model.config.feed_forward_proj == "gated-gelu"


def test_greedy_summaries_are_the_pinned_ones():
    pinned = json.loads(PINNED.read_text())
    assert len(pinned) == COUNT and summaries() == pinned


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_fine_tuning_lowers_the_validation_loss(runs, mode):
    model, tokenizer = load_model_and_tokenizer(str(MODEL))
    val = batches_by_epoch(load_split(str(DATA), "validation", 32), tokenizer, 8, 42, 384, 64)(0)
    before = validation_loss(model, val, "fp32", torch.device("cpu"))  # the run's own validation batches
    assert runs[mode]["best_val_loss"] < before - 0.3, (before, runs[mode]["best_val_loss"])


# ROUGE-1 / ROUGE-2 above zero-shot's (0.179 / 0.010 on these 24 dialogues): LoRA after 40 steps 0.199 / 0.031
@pytest.mark.parametrize("mode, margin", [("lora", 0.01), ("full", 0.03)])
def test_fine_tuning_raises_rouge_over_zero_shot(runs, mode, margin):
    tuned, zero = runs[mode], runs["zero-shot"]
    assert tuned["rouge1"] > zero["rouge1"] + margin and tuned["rouge2"] > zero["rouge2"] + 0.01, (tuned, zero)


def test_full_fine_tuning_writes_each_dialogue_its_own_summary(runs):
    """What ROUGE alone cannot show: the summaries are about their dialogue. Most are distinct, and they score
    higher against their own dialogue's references than against another's (`unpaired`, eval/evaluate.py). The
    first shipped model (AdamW-pretrained) failed both: 3 distinct summaries of 500, -0.14 ROUGE-1 owed to the
    dialogue (docs/pretraining.md)."""
    full = runs["full"]
    assert full["distinct_share"] >= 0.5, full["distinct_share"]
    assert full["rouge1"] > full["unpaired"]["rouge1"], (full["rouge1"], full["unpaired"])  # 23.1 vs 22.3 here


def test_lora_trains_a_small_share_of_the_parameters(runs):
    lora, full = runs["lora"], runs["full"]
    assert lora["trainable_params"] < 0.03 * lora["total_params"] and full["trainable_params"] == full["total_params"]
    assert lora["artifact_bytes"] < full["artifact_bytes"] / 10


def test_the_adapter_gives_back_the_lora_runs_summaries(runs, tmp_path):
    lora = runs["lora"]["folder"]
    assert run.main(["--mode", "zero-shot", *EVAL, "--adapter", str(lora / "adapter"),
                     "--output-dir", str(tmp_path / "again")]) == 0
    again, trained = predictions(tmp_path / "again"), predictions(lora)
    # The run generated with B A x beside W x (and the CPU kernels' rounding); --adapter merges W + B A first. The
    # rounding differs, so a greedy choice between two near-tied words may flip: allow one summary in 12 to differ.
    assert sum(a == b for a, b in zip(again, trained)) >= len(trained) * 11 / 12, list(zip(again, trained))
    assert predictions(lora) != predictions(runs["zero-shot"]["folder"])

"""`--adapter DIR`: summarising with a trained LoRA adapter gives what the training run gave; peft's adapters
load too; a folder that is not an adapter, or an adapter for another model, is one line and exit code 2."""
import copy
import csv
import json

import pytest
import torch

import run
from lora.adapter_file import save_adapter
from lora.layer import LoRAConfig, add_lora, lora_layers
from prompting.adapter import apply_adapter
from model.load import build_from_config
from tests.conftest import DATA_DIR, SMALL_DIR, tiny_t5_config

# flan-t5-small's architecture with random weights, a few dialogues, short summaries: seconds, not minutes.
COMMON = ["--model", str(SMALL_DIR), "--random-init", "--data", str(DATA_DIR), "--split", "validation",
          "--max-eval-samples", "4", "--batch-size", "4", "--max-input-tokens", "64", "--max-new-tokens", "12",
          "--device", "cpu", "--precision", "fp32"]


def predictions(folder) -> list[str]:
    with open(folder / "predictions.csv", newline="") as f:
        return [row["prediction"] for row in csv.DictReader(f)]


def fails(argv, capsys) -> str:
    """Exit code 2 and one error line (besides the --random-init warning); returns that line."""
    assert run.main(argv) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("--random-init:")]
    assert len(lines) == 1 and lines[0].startswith("run.py: error: "), lines
    return lines[0]


def test_zero_shot_with_the_saved_adapter_writes_the_training_runs_predictions(tmp_path):
    lora_run, reused = tmp_path / "lora", tmp_path / "zero-shot"
    # lr 3e-3 for 2 steps moves B far enough from 0 that the summaries differ from the base model's.
    assert run.main(["--mode", "lora", *COMMON, "--max-train-samples", "8", "--max-val-samples", "4",
                     "--max-steps", "2", "--max-target-tokens", "16", "--lr", "0.003", "--lora-r", "4",
                     "--output-dir", str(lora_run)]) == 0
    assert run.main(["--mode", "zero-shot", *COMMON, "--adapter", str(lora_run / "adapter"),
                     "--output-dir", str(reused)]) == 0
    assert predictions(reused) == predictions(lora_run)  # greedy decoding: the same text, dialogue by dialogue
    assert len(set(predictions(reused))) > 1  # not one degenerate summary everywhere
    metrics = json.loads((reused / "metrics.json").read_text())
    assert metrics["adapter"] == str(lora_run / "adapter") and metrics["adapter_r"] == 4
    for folder in (lora_run, reused):
        recorded = json.loads((folder / "metrics.json").read_text())
        assert recorded["generation"]["num_beams"] == 1 and 0 < recorded["gen_len"] <= 12 + 1  # + </s>


def test_an_adapter_peft_saved_loads_and_merges_to_peft_s_model(tmp_path):
    from peft import LoraConfig, get_peft_model

    base = build_from_config(tiny_t5_config(), dtype=torch.float64).eval()
    theirs = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"],
                                                            lora_dropout=0.0, task_type="SEQ_2_SEQ_LM"))
    with torch.no_grad():
        for name, param in theirs.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)  # peft starts B at 0: make the adapter change something
    theirs.save_pretrained(tmp_path)
    ours = copy.deepcopy(base)
    info = apply_adapter(ours, tmp_path)
    # q and v in 2 encoder self-attentions, 2 decoder self- and 2 cross-attentions; merged: no LoRA layer left
    assert info["adapted_layers"] == 12 and not lora_layers(ours)
    ids, labels = torch.randint(2, 128, (2, 7)), torch.randint(2, 128, (2, 5))
    with torch.no_grad():
        expected = theirs(input_ids=ids, labels=labels).logits
        got = ours(input_ids=ids, labels=labels).logits
        unchanged = base(input_ids=ids, labels=labels).logits
    assert torch.allclose(got, expected, atol=1e-10) and not torch.allclose(got, unchanged, atol=1e-3)


def test_a_folder_without_adapter_config_is_one_line(tmp_path, capsys):
    (tmp_path / "not-an-adapter").mkdir()
    line = fails(["--mode", "zero-shot", *COMMON, "--adapter", str(tmp_path / "not-an-adapter"),
                  "--output-dir", str(tmp_path / "out")], capsys)
    assert f"--adapter {tmp_path / 'not-an-adapter'}: no adapter_config.json in it" in line


def test_an_adapter_for_another_model_names_the_first_mismatching_key_and_both_shapes(tmp_path, capsys):
    other = build_from_config(tiny_t5_config())  # d_model 32; flan-t5-small's is 512
    add_lora(other, LoRAConfig(("q", "v"), r=4, alpha=8, dropout=0.0))
    save_adapter(other, tmp_path / "adapter", base_model_name_or_path="tiny-t5")
    line = fails(["--mode", "zero-shot", *COMMON, "--adapter", str(tmp_path / "adapter"),
                  "--output-dir", str(tmp_path / "out")], capsys)
    key = "base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight"
    assert f"'{key}' has shape (4, 32) but the model expects (4, 512)" in line


def test_adapter_is_for_prompting_modes(tmp_path, capsys):
    line = fails(["--mode", "lora", "--adapter", str(tmp_path), "--output-dir", str(tmp_path / "out")], capsys)
    assert "--adapter summarises with an adapter already trained" in line

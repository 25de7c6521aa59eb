"""`python run.py --mode pretrain` end to end on a narrow T5: T5's optimiser by default, a run folder like any
other (log, checkpoints, metrics.json), the model saved in bf16 with its card, and `--resume` continuing it."""
import json
import shutil

import torch

import run
from tests.conftest import DATA_DIR
from tests.train_helpers import narrow_model


def pretrain_args(model_dir, out, *extra):
    return ["--mode", "pretrain", "--model", str(model_dir), "--data", str(DATA_DIR), "--max-train-samples", "40",
            "--max-val-samples", "8", "--batch-size", "4", "--max-steps", "4", "--eval-every", "2", "--save-every",
            "2", "--max-input-tokens", "64", "--max-target-tokens", "24", "--precision", "fp32", "--device", "cpu",
            "--output-dir", str(out), *extra]


def test_pretraining_uses_adafactor_and_leaves_a_model_with_its_card(tmp_path):
    from transformers import T5ForConditionalGeneration

    out = tmp_path / "pretrain"
    assert run.main(pretrain_args(narrow_model(tmp_path), out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["optim"]["optimizer"] == "adafactor" and metrics["train"]["optim"]["lr"] == 1e-2
    assert metrics["steps"] == 4 and metrics["best_val_loss"] is not None
    model = T5ForConditionalGeneration.from_pretrained(out / "model")
    assert next(model.parameters()).dtype == torch.bfloat16
    card = (out / "model" / "README.md").read_text()
    assert metrics["weights_sha256"] in card and "--mode pretrain" in card


def test_a_resumed_pretraining_ends_with_the_weights_of_an_unbroken_one(tmp_path):
    """Adafactor's factored moments are in the checkpoint: resuming from step 2 gives step 4's weights bit for bit."""
    model_dir, whole = narrow_model(tmp_path), tmp_path / "whole"
    assert run.main(pretrain_args(model_dir, whole)) == 0
    broken = tmp_path / "broken"
    shutil.copytree(whole, broken)
    last = broken / "checkpoints" / "step-00000004.pt"
    last.unlink()
    last.with_suffix(".pt.sha256").unlink(missing_ok=True)
    assert run.main(pretrain_args(model_dir, broken, "--resume", "--overwrite")) == 0
    ours, theirs = (torch.load(f / "checkpoints" / "step-00000004.pt", weights_only=True)["weights"]
                    for f in (broken, whole))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

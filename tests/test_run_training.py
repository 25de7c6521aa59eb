"""`python run.py --mode full|lora`: impossible flags give one line and exit code 2 before anything slow starts;
a small real run leaves a model transformers loads (or a peft-format adapter), the step log, the loss curve
and metrics.json with the training figures."""
import json
import shutil
from collections import namedtuple

import pytest
import torch

import run
from tests.conftest import DATA_DIR, SMALL_DIR
from tests.train_helpers import narrow_model, quick_config, random_batches, tiny_model
from train_loop.loop import train


@pytest.fixture
def narrow_model_dir(tmp_path):
    return narrow_model(tmp_path)


def fails(argv, capsys) -> str:
    """Run run.py's main; demand exit code 2 and exactly one error line on stderr (besides the --random-init
    warning, which is the model loader's and comes first); return that line."""
    assert run.main(argv) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("--random-init:")]
    assert len(lines) == 1 and lines[0].startswith("run.py: error: "), lines
    return lines[0]


@pytest.mark.parametrize("flags, message", [
    (["--lr", "-0.001"], "--lr -0.001: the learning rate must be positive"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 1"),
    (["--grad-accum", "0"], "--grad-accum 0"),
    (["--max-steps", "0"], "--max-steps 0"),
    (["--lora-dropout", "1.5"], "dropout=1.5 (--lora-dropout)"),
    (["--merge"], "--merge merges a LoRA adapter"),
    (["--device", "cpu", "--precision", "fp16"], "fp16 needs a CUDA GPU"),
])
def test_impossible_flags_give_one_line_and_exit_code_2(flags, message, tmp_path, capsys):
    # a local --model: --mode full's default learning rate reads its config.json (d_model) when the run is built
    line = fails(["--mode", "full", "--model", str(SMALL_DIR), "--output-dir", str(tmp_path / "out"), *flags], capsys)
    assert message in line


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    line = fails(["--mode", "lora", "--output-dir", str(tmp_path), "--resume"], capsys)
    assert "--resume" in line and "holds no checkpoint" in line


def test_resume_from_a_checkpoint_of_another_mode_is_refused(tmp_path, capsys):
    batches = random_batches(2)
    train(tiny_model(), lambda e: batches, quick_config(max_steps=1), torch.device("cpu"), folder=tmp_path,
          fingerprint={"mode": "full", "model": str(SMALL_DIR)})
    line = fails(["--mode", "lora", "--model", str(SMALL_DIR), "--output-dir", str(tmp_path), "--resume"], capsys)
    assert "is from --mode full" in line


def test_a_folder_with_an_unfinished_run_is_not_overwritten(tmp_path, capsys):
    batches = random_batches(2)
    train(tiny_model(), lambda e: batches, quick_config(max_steps=1), torch.device("cpu"), folder=tmp_path)
    line = fails(["--mode", "full", "--model", str(SMALL_DIR), "--output-dir", str(tmp_path)], capsys)
    assert "unfinished run" in line and "--resume" in line


def test_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert "is a file" in fails(["--mode", "full", "--model", str(SMALL_DIR), "--output-dir", str(tmp_path / "afile")],
                                capsys)


def test_too_little_disk_space_is_reported_before_training(tmp_path, capsys, monkeypatch, narrow_model_dir):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))
    line = fails(["--mode", "full", "--model", str(narrow_model_dir), "--random-init",
                  "--output-dir", str(tmp_path / "out")], capsys)
    assert "1 MiB free" in line and "needs about" in line
    assert not (tmp_path / "out" / "train_log.jsonl").exists()  # nothing started


# --- End to end: prompting/ (dialogsum, prompts, generate), train_loop/data.py, eval/ (ROUGE in finish_run) and,
# --- for LoRA, lora/ (inject, checkpoint). ----------------------------------------------------------------------

def small_run(mode, model_dir, out, *extra):
    return ["--mode", mode, "--model", str(model_dir), "--random-init", "--data", str(DATA_DIR),
            "--max-train-samples", "16", "--max-val-samples", "4", "--max-eval-samples", "2", "--max-steps", "4",
            "--batch-size", "4", "--max-input-tokens", "64", "--max-target-tokens", "24", "--max-new-tokens", "4",
            "--save-every", "2", "--precision", "fp32", "--device", "cpu", "--output-dir", str(out), *extra]


def check_run_folder(out, steps=4):
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("train_seconds", "trainable_params", "total_params", "peak_memory_mb", "artifact_bytes"):
        assert metrics[key] > 0, key
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, steps + 1))
    assert (out / "loss_curve.png").stat().st_size > 1000
    return metrics


def test_full_run_saves_a_model_transformers_loads(tmp_path, narrow_model_dir, capsys):
    from transformers import AutoModelForSeq2SeqLM

    out = tmp_path / "full"
    assert run.main(small_run("full", narrow_model_dir, out)) == 0
    assert "lr 0.001 (default)" in capsys.readouterr().out  # d_model 64 < 256: the baby-model default (default_lr)
    metrics = check_run_folder(out)
    assert metrics["trainable_params"] == metrics["total_params"]
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(out / "model")
    assert sum(p.numel() for p in reloaded.parameters()) == metrics["total_params"]


def test_lora_run_saves_a_peft_adapter_and_a_merged_model(tmp_path, narrow_model_dir):
    out = tmp_path / "lora"
    assert run.main(small_run("lora", narrow_model_dir, out, "--lora-r", "4", "--merge")) == 0
    metrics = check_run_folder(out)
    assert metrics["trainable_params"] < metrics["total_params"] / 10
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    assert (out / "merged_model" / "config.json").is_file()


def test_ctrl_c_in_the_last_step_stops_before_evaluation_and_resume_evaluates(tmp_path, narrow_model_dir, capsys,
                                                                               monkeypatch):
    import os
    import signal

    from train_loop import step

    real_apply_update, calls = step.apply_update, []

    def ctrl_c_in_step_4(optimizer, scheduler, scaler):  # Ctrl-C while the last step updates the weights
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return real_apply_update(optimizer, scheduler, scaler)
    monkeypatch.setattr(step, "apply_update", ctrl_c_in_step_4)
    out = tmp_path / "stopped"
    assert run.main(small_run("lora", narrow_model_dir, out, "--lora-r", "4")) == 130
    captured = capsys.readouterr()
    assert "stopped after step 4; checkpoint" in captured.out and "run.py: interrupted" in captured.err
    assert not (out / "metrics.json").exists()  # the summaries were not generated
    assert run.main(small_run("lora", narrow_model_dir, out, "--lora-r", "4", "--resume")) == 0
    check_run_folder(out)


def test_metrics_and_the_resume_fingerprint_hold_every_setting_of_the_run():
    """Both are derived from the run's dataclasses: a new setting lands in metrics.json and, unless NOT_TRAINING
    says it cannot change training, in the fingerprint a --resume must match (no list of fields by hand)."""
    from dataclasses import fields, is_dataclass

    from eval.evaluate import as_record
    from modes.train_config import NOT_TRAINING, config_from_args, resume_fingerprint
    from train_loop.checkpoint import flat

    def settings(config, prefix=""):
        for f in fields(config):
            value = getattr(config, f.name)
            yield from settings(value, f"{prefix}{f.name}.") if is_dataclass(value) else [prefix + f.name]
    config = config_from_args(run.build_parser().parse_args(["--mode", "lora", "--device", "cpu"]))
    every = set(settings(config))
    assert set(flat(as_record(config))) == every  # metrics.json's part before the results
    assert set(resume_fingerprint(config)) == {name for name in every if not name.startswith(NOT_TRAINING)}
    assert all(any(name.startswith(left_out) for name in every) for left_out in NOT_TRAINING)  # none stale
    assert {"train.optim.lr", "lora.r", "data.max_train_samples", "seed", "cpu_kernels"} <= set(resume_fingerprint(config))

"""`run.py --mode zero-shot|one-shot|few-shot` end to end, and every bad input as one clear line with exit code 2."""
import csv
import json
import re
import subprocess
import sys

import pytest

import run
from prompting.dialogsum import load_split
from tests.conftest import DATA_DIR, REPO, SMALL_DIR

SMOKE = ["--model", str(SMALL_DIR), "--random-init", "--data", str(DATA_DIR), "--max-eval-samples", "4",
         "--max-new-tokens", "8"]


@pytest.mark.parametrize("mode, shots", [("zero-shot", 0), ("one-shot", 1), ("few-shot", 3)])
def test_each_prompting_mode_writes_its_run_folder(tmp_path, caplog, mode, shots):
    out = tmp_path / mode
    assert run.main(["--mode", mode, *SMOKE, "--output-dir", str(out)]) == 0
    assert "summaries are meaningless" in caplog.text  # --random-init says so

    test = load_split(str(DATA_DIR), "test", max_samples=4)
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [ex.id for ex in test]
    assert [r["dialogue"] for r in rows] == [ex.dialogue for ex in test]
    assert [(r["reference_1"], r["reference_2"], r["reference_3"]) for r in rows] == [ex.references for ex in test]
    assert all("prediction" in r for r in rows)

    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["mode"], metrics["examples"], metrics["trainable_params"]) == (mode, 4, 0)
    assert metrics["total_params"] == 76_961_152  # flan-t5-small with its own lm_head (docs/NOTES.md)
    assert metrics["train_seconds"] == 0 and metrics["artifact_bytes"] == 0
    assert metrics["peak_memory_mb"] > 0 and metrics["generation_seconds"] > 0
    stats = metrics["prompt_stats"]
    assert stats["prompts"] == 4 and stats["shots_requested"] == shots
    assert stats["shots_used"] + stats["shots_dropped"] == 4 * shots
    assert 0 < stats["prompt_tokens_mean"] <= stats["prompt_tokens_max"] <= 512

    side = (out / "side_by_side.md").read_text()
    assert test[0].references[0] in side and test[0].dialogue.splitlines()[0] in side
    assert ("Summary:" if shots == 0 else "What was going on?") in side


def data_with_bad_line(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "dialogsum.test.jsonl").write_text('{"fname": "test_0", "dialogue": "#Person1#: Hi."\n')
    return folder


def model_folder_without(tmp_path, missing):
    folder = tmp_path / f"model-without-{missing}"
    folder.mkdir()
    if missing != "config":
        (folder / "config.json").write_bytes((SMALL_DIR / "config.json").read_bytes())
    if missing != "tokenizer":
        (folder / "spiece.model").write_bytes((SMALL_DIR / "spiece.model").read_bytes())
    return folder


BAD_INPUTS = [
    (lambda t: ["--data", str(t / "nowhere")], r"nowhere does not exist; expected a folder with dialogsum\.test\.jsonl"),
    (lambda t: ["--data", str(data_with_bad_line(t))], r"dialogsum\.test\.jsonl:1: not a valid JSON line"),
    (lambda t: ["--data", "knkarthick/dialogsum"], r"cannot reach the Hugging Face hub for 'knkarthick/dialogsum'"),
    (lambda t: ["--batch-size", "0"], r"--batch-size 0: must be at least 1"),
    (lambda t: ["--max-new-tokens", "-1"], r"--max-new-tokens -1: must be at least 1"),
    (lambda t: ["--max-eval-samples", "0"], r"--max-eval-samples 0: must be at least 1"),
    (lambda t: ["--mode", "few-shot", "--shots", "3", "--max-train-samples", "2"], r"--shots 3: only 2 train dialogues"),
    (lambda t: ["--mode", "one-shot", "--shots", "2"], r"--mode one-shot uses exactly one shot"),
    (lambda t: ["--mode", "one-shot", "--split", "train"], r"draws its shots from train, so it cannot evaluate --split train"),
    (lambda t: ["--model", str(model_folder_without(t, "config"))], r"model folder .* has no config\.json"),
    (lambda t: ["--model", str(model_folder_without(t, "tokenizer"))], r"has no tokenizer files"),
    (lambda t: ["--model", "google/flan-t5-base"],
     r"cannot reach the Hugging Face hub for 'google/flan-t5-base' \(this machine is offline\?\); pass a local folder with --model"),
]


@pytest.mark.parametrize("extra, message", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, extra, message):
    argv = ["--mode", "zero-shot", *SMOKE, "--output-dir", str(tmp_path / "out"), *extra(tmp_path)]
    if "google/flan-t5-base" in argv:
        argv.remove("--random-init")  # the real-weights path
    assert run.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("run.py: error: ")
    assert re.search(message, err), err


@pytest.mark.parametrize("extra, message", [
    (["--data", "missing-folder"], "missing-folder does not exist"),
    (["--model", "google/flan-t5-small", "--random-init"], "cannot reach the Hugging Face hub for 'google/flan-t5-small'"),
    # a mistyped folder reads as a hub id; the line says which folders there are
    (["--data", "data/nothing"], "no folder 'data/nothing' here (data/ holds: course, dialogsum), and cannot reach"),
    (["--model", "models/nothing"],
     "no folder 'models/nothing' here (models/ holds: baby-flan-t5, flan-t5-base, flan-t5-small), and cannot reach"),
])
def test_run_py_as_a_program_prints_one_line_without_traceback(tmp_path, extra, message):
    argv = [sys.executable, "run.py", "--mode", "zero-shot", "--data", str(DATA_DIR), "--output-dir",
            str(tmp_path / "out"), *extra]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert message in done.stderr


def test_prompting_and_training_read_the_data_flags_alike():
    """Both modes build DataConfig from the same flags (modes/prompt.py calls modes/train_config.py's)."""
    from modes import prompt, train_config

    args = run.build_parser().parse_args(["--mode", "one-shot", "--data", str(DATA_DIR), "--split", "validation",
                                          "--seed", "7", "--max-train-samples", "5", "--max-val-samples", "3",
                                          "--max-eval-samples", "2", "--max-input-tokens", "99",
                                          "--max-target-tokens", "11", "--device", "cpu"])
    assert prompt.config_from_args(args).data == train_config.data_config(args)

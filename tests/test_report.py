"""`run.py --mode compare`: the report from run folders (modes/compare.py, eval/report.py, eval/runs.py).

The run folders are written by eval/evaluate.finish_run, as every mode writes them; the expected figures are read
back from their metrics.json, never typed here.
"""
import csv
import json
import sys
import types
from argparse import Namespace
from pathlib import Path

import pytest
from matplotlib import image

import run as cli
from modes.compare import config_from_args, run as compare
from eval.evaluate import finish_run
from eval.rouge import ROUGE_TYPES
from tests.test_evaluate import Example  # stand-in for prompting.dialogsum.Example


EXAMPLES = [
    Example("test_0", "#Person1#: Could you send the memo today?\n#Person2#: Yes, sir.",
            ("Person1 asks Person2 to send the memo today.", "#Person2# will send the memo.")),
    Example("test_1", "#Person1#: Where is the station?\n#Person2#: Two blocks north.",
            ("Person2 tells Person1 the way to the station.", "The station is two blocks north.")),
    Example("test_2", "#Person1#: I lost my keys.\n#Person2#: Check your bag.",
            ("Person1 lost the keys. Person2 suggests the bag.", "Keys are lost.")),
]


def write_run(folder, mode, predictions, trainable, examples=EXAMPLES, **info):
    folder.mkdir(parents=True)
    info = {"model": "flan-t5-small", "mode": mode, "trainable_params": trainable, "total_params": 76_961_152, **info}
    finish_run(folder, examples, ["prompt"] * len(examples), predictions, info)
    return folder


@pytest.fixture
def two_runs(tmp_path):
    zero = write_run(tmp_path / "zero-shot", "zero-shot", ["Send memo.", "Station?", ""], 0)
    lora = write_run(tmp_path / "lora", "lora", ["Person1 asks Person2 to send a memo.", "The station is north.",
                                                 "Person1 lost keys."], 344_064, train_seconds=4000.0,
                     peak_memory_mb=1234.5, artifact_bytes=1_380_000)
    return zero, lora


def test_report_has_the_table_gains_side_by_side_and_chart(tmp_path, two_runs):
    out = tmp_path / "report"
    assert cli.main(["--mode", "compare", "--runs", *map(str, two_runs), "--output-dir", str(out)]) == 0
    report = (out / "report.md").read_text()
    zero, lora = (json.loads((folder / "metrics.json").read_text()) for folder in two_runs)
    assert "| run | model | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | trainable params | trainable % |" in report
    for name, m in (("zero-shot", zero), ("lora", lora)):
        # each mean with its seeded 95% bootstrap interval, which finish_run records
        cells = [f"{100 * m[t]:.2f} [{100 * m[t + '_low']:.1f}, {100 * m[t + '_high']:.1f}]" for t in ROUGE_TYPES]
        assert m["rouge1_low"] <= m["rouge1"] <= m["rouge1_high"]
        assert f"| {name} | flan-t5-small | " + " | ".join(cells) + " |" in report
    assert "| 344,064 | 0.447% | 1h 06m 40s | 1,234.5 MB | 1.4 MB |" in report
    assert "## Gains over zero-shot (points)" in report
    assert "| lora | " + " | ".join(f"{100 * (lora[t] - zero[t]):+.2f}" for t in ROUGE_TYPES) + " |" in report
    assert all(f"### {ex.id}" in report and ex.references[0] in report for ex in EXAMPLES)
    assert "- **lora**: Person1 asks Person2 to send a memo." in report and "- **zero-shot**: (empty)" in report
    assert "Porter stemmer: on" in report and "split into sentences" in report
    pixels = image.imread(out / "report.png")
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert "## Notes" not in report  # same dialogues, same stemmer: nothing to warn about


def compare_runs(tmp_path, *folders):
    return compare(config_from_args(Namespace(runs=[str(f) for f in folders], output_dir=str(tmp_path / "report"))))


def test_report_warns_when_runs_are_not_comparable(tmp_path):
    a = write_run(tmp_path / "a", "full", ["Send memo.", "Station.", "Keys."], 10)
    b = write_run(tmp_path / "b", "lora", ["Send memo.", "Station."], 5, examples=EXAMPLES[:2])
    report = compare_runs(tmp_path, a, b).read_text()
    assert "different dialogues" in report and "No zero-shot run among these: gains are over a." in report


def run_cli_error(capsys, *runs) -> str:
    assert cli.main(["--mode", "compare", "--runs", *map(str, runs)]) == 2
    return capsys.readouterr().err


def test_a_folder_without_metrics_names_itself(tmp_path, capsys, two_runs):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    err = run_cli_error(capsys, two_runs[0], empty)
    assert f"--runs {empty}: no metrics.json" in err and err.count("\n") == 1
    assert f"--runs {tmp_path / 'nope'}: no such folder" in run_cli_error(capsys, tmp_path / "nope")


def test_a_predictions_file_without_a_column_names_the_column(tmp_path, capsys, two_runs):
    path = two_runs[1] / "predictions.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    column = rows[0].index("prediction")
    path.write_text("\n".join(",".join(f'"{v}"' for i, v in enumerate(row) if i != column) for row in rows))
    assert f"{path}: no column 'prediction'" in run_cli_error(capsys, *two_runs)


def test_broken_metrics_name_the_file_and_the_problem(tmp_path, capsys, two_runs):
    metrics = two_runs[0] / "metrics.json"
    metrics.write_text("{not json")
    assert f"{metrics}: not valid JSON" in run_cli_error(capsys, *two_runs)
    metrics.write_text(json.dumps({"model": "m", "rouge1": 0.2}))
    assert f"{metrics}: no ROUGE score for rouge2, rougeL, rougeLsum" in run_cli_error(capsys, *two_runs)


def stand_in_entry_point(calls):
    """A stand-in for modes.prompt / modes.train: its config records what it was built from, its run writes a run."""
    def config_from_args(args, mode, output_dir):
        return types.SimpleNamespace(mode=mode, output_dir=output_dir, shots=args.shots if mode == args.mode else None)

    def run(config):
        calls.append((config.mode, str(config.output_dir), config.shots))
        write_run(Path(config.output_dir), config.mode, ["Send memo.", "Station.", "Keys."], 1)
    return types.SimpleNamespace(config_from_args=config_from_args, run=run)


def test_the_study_runs_each_mode_into_its_own_folder_then_reports(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "modes.prompt", stand_in_entry_point(calls))
    monkeypatch.setitem(sys.modules, "modes.train", stand_in_entry_point(calls))
    args = cli.build_parser().parse_args(["--mode", "compare", "--output-dir", str(tmp_path), "--shots", "3"])
    report = compare(config_from_args(args)).read_text()
    assert calls == [(mode, str(tmp_path / mode), None) for mode in ("zero-shot", "full", "lora")]
    assert args.mode == "compare" and args.output_dir == str(tmp_path) and args.shots == 3  # a copy was changed
    assert all(f"| {mode} | flan-t5-small |" in report for mode in ("zero-shot", "full", "lora"))


def test_report_shows_the_course_style_scores_and_the_share_of_degenerate_summaries(tmp_path):
    looping = "#Person1# tells #Person2# about the memo and #Person1# tells #Person2# about the memo."
    folder = write_run(tmp_path / "full", "full", [looping, "The station is north.", "Person1 lost keys."], 10)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["degenerate_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert metrics["course_style"]["rows"] == 6  # two human summaries per dialogue, each its own row
    text = compare(config_from_args(Namespace(runs=[str(folder)], output_dir=str(tmp_path / "report")))).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| full | 6 |"))
    assert f"{100 * metrics['course_style']['rouge1']:.2f}" in row and row.endswith("| 33% |")


def test_report_says_whether_each_summary_is_about_its_dialogue_also_for_older_runs(tmp_path):
    """The same text for every dialogue owes it nothing: gap 0.00 and 1 distinct summary in 3. A run written before
    metrics.json held the measure gets it from predictions.csv, and the same figures."""
    constant = write_run(tmp_path / "full", "full", ["Person1 asks Person2 about the memo."] * 3, 10)
    about = write_run(tmp_path / "lora", "lora", [ex.references[0] for ex in EXAMPLES], 10)
    text = compare_runs(tmp_path, constant, about).read_text()
    rows = {line.split(" | ")[0][2:]: line for line in text.split("## Is each summary about its dialogue?")[1]
            .split("##")[0].splitlines() if line.startswith("| full |") or line.startswith("| lora |")}
    assert rows["full"].startswith("| full | 33.3% |") and rows["full"].endswith("| +0.00 |")
    assert float(rows["lora"].split(" | ")[-1].rstrip(" |")) > 30
    metrics = json.loads((constant / "metrics.json").read_text())
    del metrics["unpaired"], metrics["distinct_share"]  # as an older run wrote it
    (constant / "metrics.json").write_text(json.dumps(metrics))
    again = compare(config_from_args(Namespace(runs=[str(constant), str(about)], output_dir=str(tmp_path / "again"))))
    assert rows["full"] in again.read_text()

"""`--mode score`: ROUGE for a file of predictions any tool wrote. On the course's own file of FLAN-T5-base
summaries it reproduces the table the course printed; every bad input is one line naming file, column and row."""
import json
import math

import pytest

import run
from eval.rouge import ROUGE_TYPES
from eval.rouge_ways import several_ways
from eval.score_file import read_items
from tests.conftest import COURSE_DIR

COURSE_FILE = COURSE_DIR / "dialogue-summary-training-results.csv"  # absent: the tests fail, they do not skip
REFERENCE = "human_baseline_summaries"
# What the course printed: evaluate.load("rouge").compute(..., use_aggregator=True, use_stemmer=True).
PRINTED = {
    "original_model_summaries": (0.23342, 0.07604, 0.20146, 0.20146),
    "instruct_model_summaries": (0.42161, 0.18035, 0.33844, 0.33836),
    "peft_model_summaries": (0.40811, 0.16333, 0.32507, 0.32490),
}


@pytest.fixture(scope="module")
def course_file():
    """The course's file, or a failure that says where it was looked for (never a skip: CI must notice)."""
    if not COURSE_FILE.is_file():
        pytest.fail(f"the course's results file is not at {COURSE_FILE}: it ships with the repository; "
                    "restore it with git checkout", pytrace=False)
    return COURSE_FILE


@pytest.fixture(scope="module")
def course_run(tmp_path_factory, course_file):
    out = tmp_path_factory.mktemp("course")
    argv = ["--mode", "score", "--predictions", str(COURSE_FILE), "--prediction-column", *PRINTED,
            "--reference-column", REFERENCE, "--group-by", "row", "--no-lsum-sentences", "--output-dir", str(out)]
    assert run.main(argv) == 0
    return out


def rouge_score_mean(column: str) -> dict[str, float]:
    """The reference implementation: rouge_score per row, each row against its own human summary, exact mean."""
    import csv

    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    with open(COURSE_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    scores = [scorer.score(row[REFERENCE], row[column]) for row in rows]
    return {t: math.fsum(s[t].fmeasure for s in scores) / len(scores) for t in ROUGE_TYPES}


@pytest.mark.parametrize("column", list(PRINTED))
def test_course_style_scores_equal_the_printed_table_and_rouge_score(course_run, column):
    metrics = json.loads((course_run / column / "metrics.json").read_text())
    assert metrics["examples"] == 1500 and metrics["group_by"] == "row"
    expected = rouge_score_mean(column)
    for rouge_type, printed in zip(ROUGE_TYPES, PRINTED[column]):
        assert metrics[rouge_type] == expected[rouge_type]  # exactly rouge_score's mean
        assert abs(metrics[rouge_type] - printed) <= 1.5e-3  # the printed median of bootstrap means
        assert metrics[f"{rouge_type}_low"] < metrics[rouge_type] < metrics[f"{rouge_type}_high"]
    course_way = metrics["ways"][0]
    assert course_way["count"] == 1500 and all(course_way[t] == metrics[t] for t in ROUGE_TYPES)


def test_the_command_prints_both_tables_and_writes_the_report(course_run, capsys):
    text = (course_run / "score.md").read_text()
    assert "course-style" in text and "(1500 rows)" in text and "(500 dialogues)" in text
    assert "peft_model_summaries        0.40813" in text  # the printed table's layout: fractions, 5 digits
    report = (course_run / "report.md").read_text()
    assert "## peft_model_summaries: one set of predictions, several ways to score it" in report
    assert "| peft_model_summaries | peft_model_summaries | 40.81 [" in report  # a 95% interval beside the mean
    # The folders read back as any run does: --mode compare --runs makes the same report from them.
    folders = [str(course_run / column) for column in PRINTED]
    assert run.main(["--mode", "compare", "--runs", *folders, "--output-dir", str(course_run / "compare")]) == 0
    compared = (course_run / "compare" / "report.md").read_text()
    assert "| instruct_model_summaries | instruct_model_summaries | 42.14 [" in compared


def test_multi_reference_grouping_of_the_course_file_gives_500_dialogues(course_file):
    for column in PRINTED:
        items = read_items(COURSE_FILE, column, REFERENCE, group_by="dialogue")
        assert len(items) == 500 and all(len(item.references) == 3 for item in items)
        flat = [reference for item in items for reference in item.references]
        assert flat == [row.references[0] for row in read_items(COURSE_FILE, column, REFERENCE, group_by="row")]


def test_the_ways_are_seeded_and_differ_as_the_docstrings_say(course_file):
    rows = read_items(COURSE_FILE, "peft_model_summaries", REFERENCE, group_by="row")[:300]
    dialogues = read_items(COURSE_FILE, "peft_model_summaries", REFERENCE, group_by="dialogue")[:100]
    ways = {way["way"]: way for way in several_ways(rows, dialogues)}
    assert ways == {way["way"]: way for way in several_ways(rows, dialogues)}  # the same numbers every call
    course, median = ways["course: per row, one reference"], ways["course, evaluate's bootstrap median"]
    stem_off, split = ways["per row, stemmer off"], ways["per row, Lsum on sentences"]
    best = ways["per dialogue, best of k (this project)"]
    for t in ROUGE_TYPES:
        assert abs(median[t] - course[t]) < 3e-3 and median[t] != course[t]
        assert stem_off[t] < course[t] and best[t] > course[t]
    assert course["rougeLsum"] == course["rougeL"] and split["rougeLsum"] > split["rougeL"]
    assert split["rouge1"] == course["rouge1"]


def score_fails(tmp_path, capsys, content: str | None, *flags, name="preds.csv") -> str:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    argv = ["--mode", "score", "--predictions", str(path), "--prediction-column", "pred",
            "--reference-column", "ref", "--output-dir", str(tmp_path / "out"), *flags]
    assert run.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run.py: error: "), lines
    return lines[0]


@pytest.mark.parametrize("content, flags, message", [
    (None, [], "preds.csv: no such file"),
    ("", [], "preds.csv: the file is empty"),
    ("pred,ref\n", [], "preds.csv: the file has a header but no rows"),
    ("prediction,ref\na,b\n", [],
     "--prediction-column 'pred': {path} has no such column (columns: 'prediction', 'ref')"),
    ("pred,reference\na,b\n", [], "--reference-column 'ref': {path} has no such column"),
    ("pred,ref\na,b\nc,\n", [], "preds.csv, row 2: the reference cell ('ref') is empty"),
    ("pred,ref\na,x\na,y\nb,z\n", ["--group-by", "dialogue"],
     "preds.csv, row 3: grouped by runs of consecutive rows with the same prediction, this dialogue has 1 "
     "reference(s) but most have 2"),
    ("id,pred,ref\n1,a,x\n1,a,y\n2,b,z\n3,c,w\n", ["--group-by", "dialogue", "--dialogue-column", "id"],
     "preds.csv, row 1: grouped by --dialogue-column 'id', this dialogue has 2 reference(s) but most have 1"),
    ("id,pred,ref\n1,a,x\n1,b,y\n", ["--group-by", "dialogue", "--dialogue-column", "id"],
     "preds.csv, rows 1 and 2: the same dialogue (id '1') has two different predictions"),
    ("pred,ref\na,b\n", ["--dialogue-column", "dlg"], "--dialogue-column 'dlg'"),
    ("pred,ref\na,b\n", [], "expected a .csv or .jsonl file, got '.txt'"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, content, flags, message):
    name = "preds.txt" if ".txt" in message else "preds.csv"
    line = score_fails(tmp_path, capsys, content, *flags, name=name)
    assert message.format(path=tmp_path / name) in line


def test_a_jsonl_line_that_is_not_json_names_its_line(tmp_path, capsys):
    line = score_fails(tmp_path, capsys, '{"pred": "a", "ref": "b"}\n{"pred": \n', name="preds.jsonl")
    assert "preds.jsonl, line 2: not valid JSON" in line


def test_missing_flags_are_named(tmp_path, capsys):
    assert run.main(["--mode", "score", "--output-dir", str(tmp_path)]) == 2
    assert "--mode score needs --predictions FILE" in capsys.readouterr().err


def test_an_empty_prediction_scores_0_and_is_counted(tmp_path, capsys):
    """JSONL, grouped by a dialogue column whose rows are not consecutive; one model wrote nothing once."""
    lines = [{"dlg": "d1", "pred": "Bob buys a new car.", "ref": "Bob buys a new car."},
             {"dlg": "d2", "pred": "", "ref": "Amy sells her bike."},
             {"dlg": "d1", "pred": "Bob buys a new car.", "ref": "Bob gets a car."},
             {"dlg": "d2", "pred": None, "ref": "Amy sells a bike."}]
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    assert run.main(["--mode", "score", "--predictions", str(path), "--prediction-column", "pred",
                     "--reference-column", "ref", "--group-by", "dialogue", "--dialogue-column", "dlg",
                     "--output-dir", str(out)]) == 0
    assert "pred: 1 empty prediction(s), scored 0 and counted" in capsys.readouterr().out
    metrics = json.loads((out / "pred" / "metrics.json").read_text())
    assert metrics["examples"] == 2 and metrics["empty_predictions"] == 1
    assert metrics["rouge1"] == pytest.approx((1.0 + 0.0) / 2)  # d1 matches its first reference word for word

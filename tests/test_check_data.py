"""`--mode check-data` finds what was put there: a test dialogue copied from train (other case and spacing), one
copied with a few words changed, prompts and summaries too long for the token budgets, empty cells, an id twice,
two speaker formats; each a one-line verdict at the top of data_check.md naming the rows; clean data gets `ok`."""
import json

import pytest

import run
from model.load import load_tokenizer
from bench.samsum_shaped import as_samsum
from prompting.dialogsum import load_split
from prompting.near_duplicates import jaccard, normalise, shingles
from tests.conftest import DATA_DIR, REPO

BABY = REPO / "models" / "baby-flan-t5"


@pytest.fixture(scope="module")
def dialogues():
    return load_split(str(DATA_DIR), "train", 60)  # the first 60 of a fixed shuffle: no two alike


def write_splits(folder, parts):
    """{split: [(id, dialogue, summary)]} as three JSONL files with the columns cid, talk, abstract."""
    folder.mkdir()
    for split, rows in parts.items():
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"cid": i, "talk": d, "abstract": s}) + "\n" for i, d, s in rows))
    return [arg for split in parts for arg in (f"--{split}-file", str(folder / f"{split}.jsonl"))]


def check(files, out, *extra):
    assert run.main(["--mode", "check-data", "--model", str(BABY), *files, "--dialogue-column", "talk",
                     "--summary-column", "abstract", "--id-column", "cid", "--output-dir", str(out), *extra]) == 0
    report = json.loads((out / "data_check.json").read_text())
    verdicts = {v["check"]: v for v in report["verdicts"]}
    top = (out / "data_check.md").read_text().splitlines()[2:2 + len(verdicts)]
    assert top == [f"- {line}" for line in (run_line(v) for v in report["verdicts"])]  # the verdicts come first
    return verdicts, report


def run_line(v):
    from prompting.data_check import Finding

    return Finding(**v).line()


def test_check_data_finds_constructed_leaks_truncation_and_faults(tmp_path, dialogues):
    rows = [(ex.id, ex.dialogue, ex.references[0]) for ex in dialogues]
    copied = rows[3][1].upper().replace(": ", ":   ")  # train_x's dialogue again, other case and spacing
    words = rows[5][1].split(" ")
    changed = " ".join(words[:10] + ["Walrus"] + words[11:])  # one word of a long dialogue changed
    assert 0.8 <= jaccard(shingles(normalise(changed)), shingles(normalise(rows[5][1]))) < 1
    long_dialogue = " ".join(rows[59][1] for _ in range(3))  # from no other split
    parts = {"train": rows[:40] + [("twice", rows[40][1], rows[40][2]), ("twice", rows[41][1], rows[41][2])],
             "validation": [*rows[42:50], ("empty-one", rows[50][1], "")],
             "test": [("leak", copied, "x"), ("near", changed, "y"), ("long", long_dialogue, "a " * 120),
                      ("samsum", as_samsum(rows[51][1]), rows[51][2]), *rows[52:58]]}
    verdicts, report = check(write_splits(tmp_path / "data", parts), tmp_path / "out", "--max-input-tokens", "256",
                             "--max-target-tokens", "32")
    assert verdicts["leak"]["level"] == "problem" and verdicts["leak"]["ids"] == [f"test:leak = train:{rows[3][0]}"]
    near = verdicts["near leak"]
    assert near["level"] == "warn" and [i.split(" (")[0] for i in near["ids"]] == [f"test:near ~ train:{rows[5][0]}"]
    assert "test:long" in verdicts["prompt tokens"]["ids"] and verdicts["prompt tokens"]["level"] == "warn"
    assert "--max-input-tokens 256" in verdicts["prompt tokens"]["text"]
    assert "test:long" in verdicts["summary tokens"]["ids"]
    tokens = len(load_tokenizer(BABY)("a " * 120).input_ids)  # </s> counted; the longest test summary
    assert report["splits"]["test"]["summaries"]["over_by_max"] == tokens - 32
    assert verdicts["empty"]["ids"] == ["validation:empty-one (summary)"] and verdicts["empty"]["level"] == "problem"
    assert verdicts["duplicate ids"]["ids"] == ["train:twice (row 41) = train:twice (row 42)"]
    assert verdicts["speakers"]["level"] == "warn" and "Name: lines in 1" in verdicts["speakers"]["text"]


def test_clean_data_gets_ok_verdicts(tmp_path, dialogues):
    rows = [(ex.id, ex.dialogue, ex.references[0]) for ex in dialogues]
    verdicts, _ = check(write_splits(tmp_path / "data", {"train": rows[:40], "validation": rows[40:50],
                                                         "test": rows[50:]}), tmp_path / "out")
    assert {check: v["level"] for check, v in verdicts.items()} == {check: "ok" for check in verdicts}
    assert verdicts["rows"]["text"] == "rows: train 40, validation 10, test 10"

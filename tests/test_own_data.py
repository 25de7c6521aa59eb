"""Your own dialogues (prompting/own_data.py): a SAMSum-shaped CSV with other column names and a JSONL file with an
id column give the examples DialogSum gives; one file is split by a seeded rule into disjoint splits of the sizes
asked; every bad input is one line on stderr naming the file, row or flag, and exit code 2."""
import csv
import json

import pytest

import run
from bench.samsum_shaped import samsum_rows, write
from prompting.dialogsum import DataConfig, load_data, load_split
from prompting.near_duplicates import normalise
from prompting.own_data import split_groups
from tests.conftest import DATA_DIR, REPO

BABY = REPO / "models" / "baby-flan-t5"
SAMSUM = {"dialogue_column": "chat", "summary_columns": ("gist", "gist_2")}


@pytest.fixture(scope="module")
def test_dialogues():
    return load_split(str(DATA_DIR), "test", 40)  # three references each


@pytest.fixture
def samsum_csv(tmp_path, test_dialogues):
    """40 of DialogSum's test dialogues as SAMSum writes them ("Amanda: ..."), columns chat, gist, gist_2."""
    path = tmp_path / "samsum_like.csv"
    write(path, samsum_rows(test_dialogues, references=2))
    return path


def test_a_samsum_shaped_csv_with_other_column_names_gives_examples_with_both_references(samsum_csv, test_dialogues):
    data = DataConfig(str(samsum_csv), validation_size=5, test_size=5, **SAMSUM)
    splits = {split: load_data(data, split) for split in ("train", "validation", "test")}
    every = sorted((ex for examples in splits.values() for ex in examples), key=lambda ex: int(ex.id[4:]))
    assert [ex.id for ex in every] == [f"row-{i}" for i in range(1, 41)]  # no --id-column: rows numbered
    first = every[0]
    assert first.dialogue.startswith("Amanda: ") and "\nJerry: " in first.dialogue  # as written, line breaks kept
    assert first.references == tuple(r.replace("#Person1#", "Amanda").replace("#Person2#", "Jerry")
                                     for r in test_dialogues[0].references[:2])


def test_three_jsonl_files_with_an_id_column_and_dialogsum_turns(tmp_path, test_dialogues):
    files = {}
    for split, part in (("train", test_dialogues[:20]), ("validation", test_dialogues[20:30]),
                        ("test", test_dialogues[30:])):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps({"key": ex.id, "text": ex.dialogue, "ref": ex.references[0]}) + "\n"
                                        for ex in part))
    data = DataConfig(None, train_file=str(files["train"]), validation_file=str(files["validation"]),
                      test_file=str(files["test"]), dialogue_column="text", summary_columns=("ref",), id_column="key")
    test = load_data(data, "test", max_samples=4)
    assert [(ex.id, ex.dialogue, ex.references) for ex in test] == [
        (ex.id, ex.dialogue, ex.references[:1]) for ex in test_dialogues[30:34]]
    assert test[0].dialogue.startswith("#Person1#: ")


def test_the_split_is_seeded_disjoint_of_the_sizes_asked_and_keeps_file_order():
    dialogues = [f"#Person1#: Hello number {i}.\n#Person2#: Hi." for i in range(100)]
    dialogues[70] = dialogues[3].upper().replace("\n", "  \n")  # the same dialogue again, written otherwise
    parts = split_groups(dialogues, validation_size=0.1, test_size=12, seed=7)
    assert parts == split_groups(list(dialogues), 0.1, 12, seed=7)  # seeded: the same split again
    assert parts != split_groups(dialogues, 0.1, 12, seed=8)
    assert sorted(i for part in parts.values() for i in part) == list(range(100))  # every row, once
    groups = {split: {normalise(dialogues[i]) for i in part} for split, part in parts.items()}
    assert not (groups["train"] & groups["validation"] or groups["train"] & groups["test"]
                or groups["validation"] & groups["test"])  # no dialogue in two splits, rows 3 and 70 included
    # 99 distinct dialogues: 10% of them (rounded) validation, 12 test, the rest train
    assert (len(groups["validation"]), len(groups["test"]), len(groups["train"])) == (10, 12, 77)
    assert all(part == sorted(part) for part in parts.values())


def fails(argv, capsys) -> str:
    """run.py's main gives exit code 2 and one line on stderr; returns it."""
    assert run.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run.py: error: "), lines
    return lines[0]


def zero_shot(data, out, *extra, mode="zero-shot", dialogue_column="chat"):
    return ["--mode", mode, "--model", str(BABY), "--data", str(data), "--dialogue-column", dialogue_column,
            "--summary-column", "gist", "gist_2", "--output-dir", str(out), "--device", "cpu", *extra]


def rewrite(path, edit):
    """The CSV with `edit(rows)` applied."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    edit(rows)
    write(path, rows)


def test_every_bad_input_is_one_line_naming_the_file_row_or_flag(samsum_csv, tmp_path, capsys):
    out = tmp_path / "out"
    line = fails(zero_shot(samsum_csv, out, dialogue_column="dialog"), capsys)
    assert f"--dialogue-column 'dialog': {samsum_csv} has no such column (columns: 'chat', 'gist', 'gist_2')" in line
    for template, times in (("Summarise: ", 0), ("{dialogue} and again {dialogue}", 2)):
        for mode in ("zero-shot", "lora"):
            line = fails(zero_shot(samsum_csv, out, "--prompt", template, mode=mode), capsys)
            assert f"--prompt {template!r}: holds {{dialogue}} {times} times" in line
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert f"--data {empty}: the file is empty" in fails(zero_shot(empty, out), capsys)

    rewrite(samsum_csv, lambda rows: rows[6].update(gist_2="  "))
    line = fails(zero_shot(samsum_csv, out), capsys)
    assert f"{samsum_csv}, row 7: the summary cell (--summary-column gist_2) is empty" in line

    rewrite(samsum_csv, lambda rows: [row.update(gist_2="x", key=f"k{min(i, 9)}") for i, row in enumerate(rows)])
    line = fails(zero_shot(samsum_csv, out, "--id-column", "key"), capsys)
    assert f"{samsum_csv}, row 11: id 'k9' (--id-column key) is also the id of row 10; ids must be unique" in line
    line = fails(zero_shot(DATA_DIR, out), capsys)  # a DialogSum folder has its own layout
    assert "--dialogue-column names a column of your own files" in line
    line = fails(zero_shot(samsum_csv, out, "--train-file", str(samsum_csv)), capsys)
    assert "give one file to split with --data, or one file per split, not both" in line
    line = fails(["--mode", "lora", "--model", str(BABY), "--train-file", str(samsum_csv), "--validation-file",
                  str(samsum_csv), "--dialogue-column", "chat", "--output-dir", str(out)], capsys)
    assert "--test-file: not given, and this run reads the test split" in line  # before training, not after
    assert not out.exists()  # nothing was left behind

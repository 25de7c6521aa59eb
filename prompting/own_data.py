"""Your own dialogues: any .csv or .jsonl file, any column names, read as the same `Example`s DialogSum gives.

    python run.py --mode lora --data chats.csv --dialogue-column chat --summary-column gist
    python run.py --mode lora --train-file a.jsonl --validation-file b.jsonl --test-file c.jsonl

**Columns.** `--dialogue-column` (default `dialogue`) holds the dialogue as written: DialogSum's `#Person1#: ...`
turns, SAMSum's `Amanda: ...` lines or any other text (nothing downstream parses speakers). `--summary-column`
(default `summary`) names one column of human summaries, or several: each is one reference of the same dialogue,
as DialogSum's test split has three (training learns the first; ROUGE takes the best). `--id-column` is optional:
without it rows are numbered `row-1`, `row-2`, ... in file order (row 1 is the first row after a CSV's header).

**One file, three splits** (`split_groups`, recorded in metrics.json as `data_split`):
1. rows are grouped by their normalised dialogue (near_duplicates.normalise: case, punctuation, spacing and
   speaker labels ignored), so one dialogue written twice lands in one split, never in two;
2. the groups, in file order, are shuffled with `random.Random(--split-seed)`;
3. the first `--test-size` groups are test, the next `--validation-size` validation, the rest train (a size below 1
   is that fraction of the groups, rounded; 1 or more is a number of groups);
4. every split keeps the file's order.
The same file, sizes and seed give the same split on every machine; `--seed` (training's shuffle, initialisation,
dropout) leaves it alone, so runs with other seeds are scored on the same test dialogues. Near-duplicates can
still fall into two splits: `--mode check-data` finds them.

**Faults** are one line naming the file, the row and the flag: a column that is not there, an empty file, a row
with an empty dialogue or summary cell, an id on two rows (`check_rows`; `--mode check-data` lists them all).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import NamedTuple

from eval.score_file import cell_text, check_column, read_table
from prompting.dialogsum import SPLITS, DataConfig, Example
from prompting.near_duplicates import normalise

SPLIT_RULE = ("rows grouped by normalised dialogue (one dialogue, one split); the groups shuffled with "
              "random.Random(split_seed); the first test_size groups test, the next validation_size validation, the "
              "rest train (a size below 1: that fraction of the groups, rounded); file order kept in each split")


class Row(NamedTuple):
    """One row as read, nothing checked: cells that are empty or missing are ""."""
    file: str
    number: int                   # 1-based, the header not counted
    id: str                       # --id-column's cell, or row-N
    dialogue: str
    references: tuple[str, ...]   # one per --summary-column, in that order

    @property
    def where(self) -> str:
        return f"{self.file}, row {self.number}"


def read_rows(path: str | Path, data: DataConfig, flag: str) -> list[Row]:
    """The rows of a file with the columns `data` names; only a column that is not there raises."""
    names, rows = read_table(path, flag)
    check_column(path, names, data.dialogue_column, "--dialogue-column")
    for column in data.summary_columns:
        check_column(path, names, column, "--summary-column")
    if data.id_column:
        check_column(path, names, data.id_column, "--id-column")
    return [Row(str(path), number,
                cell_text(row.get(data.id_column)).strip() if data.id_column else f"row-{number}",
                cell_text(row.get(data.dialogue_column)).strip(),
                tuple(cell_text(row.get(column)).strip() for column in data.summary_columns))
            for number, row in enumerate(rows, start=1)]


def check_rows(rows: list[Row], data: DataConfig) -> list[Example]:
    """Examples of rows with a dialogue, every summary and a unique id; the first row without raises."""
    first_row: dict[str, int] = {}
    for row in rows:
        if not row.dialogue:
            raise ValueError(f"{row.where}: the dialogue cell (--dialogue-column {data.dialogue_column}) is empty; "
                             "fill it or remove the row")
        for column, reference in zip(data.summary_columns, row.references):
            if not reference:
                raise ValueError(f"{row.where}: the summary cell (--summary-column {column}) is empty; every row "
                                 "needs a summary in every --summary-column")
        if not row.id:
            raise ValueError(f"{row.where}: the id cell (--id-column {data.id_column}) is empty")
        if row.id in first_row:
            raise ValueError(f"{row.where}: id {row.id!r} (--id-column {data.id_column}) is also the id of row "
                             f"{first_row[row.id]}; ids must be unique")
        first_row[row.id] = row.number
    return [Example(row.id, row.dialogue, row.references, "") for row in rows]


def split_size(size: float, groups: int) -> int:
    return round(size * groups) if size < 1 else int(size)


def split_groups(dialogues: list[str], validation_size: float, test_size: float, seed: int) -> dict[str, list[int]]:
    """split -> the indices of its rows, by SPLIT_RULE (module docstring)."""
    groups: dict[str, list[int]] = {}
    for i, dialogue in enumerate(dialogues):
        groups.setdefault(normalise(dialogue), []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    n_test, n_val = split_size(test_size, len(order)), split_size(validation_size, len(order))
    if min(n_test, n_val) < 1 or n_test + n_val >= len(order):
        raise ValueError(f"--validation-size {validation_size:g} and --test-size {test_size:g} of {len(order)} "
                         f"distinct dialogues leave {n_val} for validation, {n_test} for test and "
                         f"{len(order) - n_test - n_val} for train: each split needs at least one")
    parts = {"test": order[:n_test], "validation": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    return {split: sorted(i for group in parts[split] for i in group) for split in SPLITS}


def split_file_flag(split: str) -> str:
    return f"--{split}-file"


def own_rows(data: DataConfig) -> dict[str, list[Row]]:
    """The rows of each split the files give, as read (`--mode check-data` looks at them before any check)."""
    if data.one_file:
        rows = read_rows(data.source, data, "--data")
        parts = split_groups([r.dialogue for r in rows], data.validation_size, data.test_size, data.split_seed)
        return {split: [rows[i] for i in parts[split]] for split in SPLITS}
    files = {split: getattr(data, f"{split}_file") for split in SPLITS}
    return {split: read_rows(file, data, split_file_flag(split)) for split, file in files.items() if file}


def load_own_split(data: DataConfig, split: str) -> list[Example]:
    """The examples of one split: of its own file, or its share of the one file (whose rows are all checked, so an
    id on two rows is found wherever the split puts them)."""
    if data.one_file:
        rows = read_rows(data.source, data, "--data")
        examples = check_rows(rows, data)
        parts = split_groups([r.dialogue for r in rows], data.validation_size, data.test_size, data.split_seed)
        return [examples[i] for i in parts[split]]
    data.check_files([split])
    return check_rows(read_rows(getattr(data, f"{split}_file"), data, split_file_flag(split)), data)


def split_record(data: DataConfig) -> dict:
    """What metrics.json says of how the dialogues were split: the rule, its settings and the sizes it gave."""
    if not data.one_file:
        return {"files": {split: getattr(data, f"{split}_file") for split in SPLITS}}
    rows = read_rows(data.source, data, "--data")
    parts = split_groups([r.dialogue for r in rows], data.validation_size, data.test_size, data.split_seed)
    return {"file": data.source, "rule": SPLIT_RULE, "validation_size": data.validation_size,
            "test_size": data.test_size, "split_seed": data.split_seed,
            **{f"{split}_rows": len(parts[split]) for split in SPLITS}}

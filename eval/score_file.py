"""Reading a file of predictions that any tool wrote (CSV or JSONL) into items to score.

    items = read_items("results.csv", "peft_model_summaries", "human_baseline_summaries", group_by="dialogue")

An *item* is what one ROUGE score is computed for: one prediction and the human summaries it is compared with.

* `group_by="row"`: every row is an item with its own reference (the course notebook's way: its 1,500 test rows
  are 500 dialogues x 3 human summaries, each row scored against one of them).
* `group_by="dialogue"`: the rows of one dialogue make one item with all their references, and ROUGE takes the
  best reference per type (as `rouge_score.RougeScorer.score_multi` does). Rows belong together when they share
  the `dialogue_column` value, or, without that column, when they are consecutive and hold the same prediction
  (the course file repeats each model summary on the three rows of its dialogue).

Everything a user can get wrong raises a one-line ValueError / FileNotFoundError naming the file, the column
and the row (1-based, counted as a spreadsheet would: row 1 is the first data row, after the header). An empty
*prediction* is not an error: a model may write nothing, and that scores 0 (`count_empty` counts them).
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import NamedTuple

GROUPINGS = ("row", "dialogue")


class Item(NamedTuple):
    """One prediction and its references; `id` names it in predictions.csv (and in error messages)."""

    id: str
    dialogue: str
    references: tuple[str, ...]
    prediction: str


def read_table(path: str | os.PathLike, flag: str = "--predictions") -> tuple[list[str], list[dict]]:
    """(columns, rows) of a .csv (header row first) or .jsonl (one JSON object per line) file; `flag` is the option
    that named it, for the errors (--predictions here; --data, --train-file, --input for your own dialogues)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from spreadsheet software is not part of the first column
    except UnicodeDecodeError as err:
        line = path.read_bytes().count(b"\n", 0, err.start) + 1
        raise ValueError(f"{flag} {path}, line {line}: not valid UTF-8 text ({err.reason}); save the file as "
                         "UTF-8") from None
    if not text.strip():
        raise ValueError(f"{flag} {path}: the file is empty")
    if path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{flag} {path}, line {number}: not valid JSON ({err.msg}); "
                                 "a .jsonl file holds one JSON object per line") from None
            if not isinstance(row, dict):
                raise ValueError(f"{flag} {path}, line {number}: expected a JSON object, got "
                                 f"{type(row).__name__}")
            rows.append(row)
        columns = list(dict.fromkeys(key for row in rows for key in row))
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted cells may hold line breaks
        columns = [c for c in (reader.fieldnames or [])]
        rows = list(reader)
    else:
        raise ValueError(f"{flag} {path}: expected a .csv or .jsonl file, got '{path.suffix or 'no suffix'}'")
    if not rows:
        raise ValueError(f"{flag} {path}: the file has a header but no rows")
    return columns, rows


def check_column(path, columns: list[str], name: str, flag: str) -> None:
    if name not in columns:
        shown = ", ".join(repr(c) for c in columns) or "none"
        raise ValueError(f"{flag} {name!r}: {path} has no such column (columns: {shown})")


def cell_text(value) -> str:
    """A cell as text: JSON null and a missing CSV cell are empty; numbers become their text."""
    return "" if value is None else str(value)


def read_items(path: str | os.PathLike, prediction_column: str, reference_column: str, group_by: str = "row",
               dialogue_column: str | None = None) -> list[Item]:
    """The items to score, in file order. See the module docstring for the two groupings."""
    if group_by not in GROUPINGS:
        raise ValueError(f"--group-by {group_by!r}: expected one of {', '.join(GROUPINGS)}")
    columns, rows = read_table(path)
    check_column(path, columns, prediction_column, "--prediction-column")
    check_column(path, columns, reference_column, "--reference-column")
    if dialogue_column is not None:
        check_column(path, columns, dialogue_column, "--dialogue-column")
    predictions = [cell_text(row.get(prediction_column)).strip() for row in rows]
    references = [cell_text(row.get(reference_column)).strip() for row in rows]
    for number, reference in enumerate(references, start=1):
        if not reference:
            raise ValueError(f"--predictions {path}, row {number}: the reference cell ({reference_column!r}) is "
                             "empty; every row needs a human summary to score against")
    keys = [cell_text(row.get(dialogue_column)) for row in rows] if dialogue_column else None
    if group_by == "row":
        return [Item(f"row-{i + 1}", keys[i] if keys else "", (references[i],), predictions[i])
                for i in range(len(rows))]
    groups = group_by_key(keys) if keys else group_consecutive(predictions)
    check_group_sizes(path, groups, dialogue_column)
    items = []
    for number, group in enumerate(groups, start=1):
        first = group[0]
        different = [i for i in group if predictions[i] != predictions[first]]
        if different:
            raise ValueError(f"--predictions {path}, rows {first + 1} and {different[0] + 1}: the same dialogue "
                             f"({dialogue_column} {keys[first]!r}) has two different predictions in "
                             f"{prediction_column!r}; one dialogue, one prediction")
        items.append(Item(f"dialogue-{number}", keys[first] if keys else "",
                          tuple(references[i] for i in group), predictions[first]))
    return items


def group_by_key(keys: list[str]) -> list[list[int]]:
    """Row indices per distinct key, in order of first appearance (the rows need not be consecutive)."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def group_consecutive(predictions: list[str]) -> list[list[int]]:
    """Runs of consecutive rows with the same prediction: [a, a, a, b, b, b] -> [[0, 1, 2], [3, 4, 5]]."""
    groups: list[list[int]] = []
    for i, prediction in enumerate(predictions):
        if groups and predictions[groups[-1][-1]] == prediction:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def check_group_sizes(path, groups: list[list[int]], dialogue_column: str | None) -> None:
    """Best-of-k ROUGE is only comparable across dialogues with the same k: more references, higher scores."""
    common = Counter(len(group) for group in groups).most_common(1)[0][0]  # ties: the size seen first
    odd = next((group for group in groups if len(group) != common), None)
    if odd is not None:
        how = (f"--dialogue-column {dialogue_column!r}" if dialogue_column
               else "runs of consecutive rows with the same prediction")
        raise ValueError(f"--predictions {path}, row {odd[0] + 1}: grouped by {how}, this dialogue has {len(odd)} "
                         f"reference(s) but most have {common}; best-of-k scores need the same k for every dialogue "
                         "(pass --dialogue-column, or --group-by row)")


def count_empty(items: list[Item]) -> int:
    """Predictions with no text: they score 0 and stay in the mean (leaving them out would flatter the model)."""
    return sum(1 for item in items if not item.prediction)

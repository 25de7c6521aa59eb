"""DialogSum as the Hugging Face hub's copy `knkarthick/dialogsum` stores it, read from the hub with `datasets` or
from its files saved locally (.jsonl or .csv): a test dialogue on three rows, one per reference, folded back into
one example. Imported only for this layout: the official one (data/dialogsum/) needs none of it.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Iterable, Iterator

from prompting.dialogsum import Example, example_from_row, open_text, read_jsonl


def load_hub(name: str, split: str) -> list[Example]:
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    except ConnectionError as err:  # offline: datasets raises ConnectionError ("Couldn't reach ... on the Hub")
        from model.hub import not_a_folder_here

        raise ValueError(f"{not_a_folder_here(name)}cannot reach the Hugging Face hub for {name!r} (this machine is "
                         "offline?); pass a local folder with --data, such as --data data/dialogsum (DialogSum as "
                         "this repository ships it)") from err
    except (OSError, ValueError) as err:  # unknown dataset, unknown split, ...
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load split {split!r} of {name!r} from the Hugging Face hub: {first_line}") from err
    return group_references((f"{name}[{split}] row {i}", row) for i, row in enumerate(dataset))


def read_csv(path: Path) -> Iterator[tuple[str, dict]]:
    """Rows of a CSV with a header; a dialogue spans several physical lines, so we report where its row starts."""
    with open_text(path) as f:
        reader = csv.DictReader(f)
        start = 2  # line 1 is the header
        try:
            for row in reader:
                where = f"{path}:{start}"
                if None in row or None in row.values():
                    raise ValueError(f"{where}: expected {len(reader.fieldnames)} fields "
                                     f"({', '.join(reader.fieldnames)}), the row has a different number")
                start = reader.line_num + 1
                yield where, row
        except csv.Error as err:
            raise ValueError(f"{path}:{reader.line_num}: malformed CSV ({err})") from err


def group_references(rows: Iterable[tuple[str, dict]]) -> list[Example]:
    """Fold consecutive rows with the same dialogue into one example with all their references. `rows` yields
    (where, row), `where` naming the file and line for errors; the hub's `test_0_1..3` become `test_0`."""
    examples: list[Example] = []
    group_ids: list[list[str]] = []
    for where, row in rows:
        example = example_from_row(row, where)
        if examples and examples[-1].dialogue == example.dialogue:
            last = examples[-1]
            examples[-1] = Example(last.id, last.dialogue, last.references + example.references, last.topic)
            group_ids[-1].append(example.id)
        else:
            examples.append(example)
            group_ids.append([example.id])
    return [Example(shared_id(ids), ex.dialogue, ex.references, ex.topic) for ex, ids in zip(examples, group_ids)]


def shared_id(ids: list[str]) -> str:
    """`["test_0_1", "test_0_2", "test_0_3"]` -> `"test_0"`; one id, or ids without a common stem, keep the first."""
    stems = {re.sub(r"_\d+$", "", i) for i in ids}
    return stems.pop() if len(ids) > 1 and len(set(ids)) > 1 and len(stems) == 1 else ids[0]


def read_rows(path: Path) -> Iterator[tuple[str, dict]]:
    return read_jsonl(path) if ".jsonl" in path.suffixes else read_csv(path)

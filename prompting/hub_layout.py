"""DialogSum as the Hugging Face hub's copy `knkarthick/dialogsum` stores it: read from the hub with `datasets`, or
its CSV files saved locally. Imported only for them: the official layout (data/dialogsum/) needs neither.
prompting/dialogsum.py folds the rows into examples (`group_references`).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from prompting.dialogsum import Example, group_references, open_text


def load_hub(name: str, split: str) -> list[Example]:
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    except ConnectionError as err:  # offline: datasets raises ConnectionError ("Couldn't reach ... on the Hub")
        raise ValueError(
            f"cannot reach the Hugging Face hub for {name!r} (this machine is offline?); "
            "pass a local folder with --data, such as --data data/dialogsum (DialogSum as this repository ships it)"
        ) from err
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

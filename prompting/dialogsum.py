"""DialogSum as one record per dialogue, whether it comes from the Hugging Face hub or from a local folder.

DialogSum (Chen et al. 2021, https://github.com/cylnlp/dialogsum) has 12,460 train, 500 validation ("dev") and
500 test dialogues. Train and validation carry one human summary each, test carries three. The sources disagree
on how they store that (docs/NOTES.md, "DialogSum"):

* the official release: `dialogsum.{train,dev,test}.jsonl`, test lines with `summary1..3` and `topic1..3`;
* the hub copy `knkarthick/dialogsum`: columns `id, dialogue, summary, topic`, and a test split of 1,500 rows,
  each dialogue repeated once per reference (rows 0-2 are the three references of `test_0`).

Both become the same list of `Example`s. The hub's layout, from the hub or saved locally (`train.jsonl`, `test.csv`,
...), is prompting/hub_layout.py's, loaded only for it: it folds consecutive rows that share a dialogue back into
one example with all their references.

Your own dialogues (one .csv/.jsonl file for `--data`, or `--train-file` & co., with any column names) are
prompting/own_data.py's, also loaded only for them; `load_data` picks the reader a run's `DataConfig` asks for.
"""
from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from model.load import is_local

SPLITS = ("train", "validation", "test")
DEFAULT_DATA = "knkarthick/dialogsum"  # --data's default: DialogSum from the Hugging Face hub
OFFICIAL_FILES = {"train": "dialogsum.train.jsonl", "validation": "dialogsum.dev.jsonl", "test": "dialogsum.test.jsonl"}
HUB_SUFFIXES = (".jsonl", ".csv")  # the hub's layout saved locally: train.jsonl, validation.csv, ...
TABLE_SUFFIXES = (".csv", ".jsonl")  # --data FILE: one file of your own, split into the three (own_data.py)


@dataclass(frozen=True)
class DataConfig:
    """Which dialogues a run reads and how many tokens of each (--data, --split, --seed, --max-*-samples,
    --max-input-tokens, --max-target-tokens; for your own files --train-file & co., the columns, the split rule),
    checked when made."""
    source: str | None = DEFAULT_DATA     # hub id, local folder, or one .csv/.jsonl file; None: --train-file & co.
    split: str = "test"                   # the split to evaluate on
    seed: int = 42                        # the train shuffle, the shots, the batches' order
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    max_eval_samples: int | None = None
    max_input_tokens: int = 512           # the prompt's budget
    max_label_tokens: int = 128           # the summary's budget when training (the labels)
    train_file: str | None = None         # --train-file, --validation-file, --test-file: one file per split
    validation_file: str | None = None
    test_file: str | None = None
    dialogue_column: str = "dialogue"     # your own files' columns (own_data.py)
    summary_columns: tuple[str, ...] = ("summary",)  # several: several references per dialogue
    id_column: str | None = None          # None: rows are numbered row-1, row-2, ...
    validation_size: float = 0.1          # --data FILE: below 1 a fraction of the dialogues, else a count
    test_size: float = 0.1
    split_seed: int = 42                  # the split's shuffle, apart from --seed

    def __post_init__(self):
        for flag, value in (("--max-train-samples", self.max_train_samples), ("--max-val-samples", self.max_val_samples),
                            ("--max-eval-samples", self.max_eval_samples), ("--max-input-tokens", self.max_input_tokens),
                            ("--max-target-tokens", self.max_label_tokens)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} {value}: must be at least 1")
        for flag, size in (("--validation-size", self.validation_size), ("--test-size", self.test_size)):
            if not (0 < size < 1 or (size >= 1 and size == int(size))):
                raise ValueError(f"{flag} {size:g}: a fraction between 0 and 1, or a whole number of dialogues")
        columns = [self.dialogue_column, *self.summary_columns, *([self.id_column] if self.id_column else [])]
        if not self.summary_columns or len(set(columns)) < len(columns):
            raise ValueError(f"--dialogue-column {self.dialogue_column}, --summary-column "
                             f"{' '.join(self.summary_columns) or '(none)'}, --id-column {self.id_column}: each "
                             "needs a name, and no column may be named twice")

    @property
    def one_file(self) -> bool:
        """--data is one .csv/.jsonl file, split into train, validation and test (own_data.py)."""
        return self.source is not None and Path(self.source).suffix.lower() in TABLE_SUFFIXES

    @property
    def own_files(self) -> bool:
        """The dialogues come from your own files (own_data.py), not from DialogSum's layout."""
        return self.one_file or any((self.train_file, self.validation_file, self.test_file))

    def check_files(self, splits) -> None:
        """With one file per split, those of `splits` (what the run will read) are given: checked before training."""
        if self.own_files and not self.one_file:
            for split in dict.fromkeys(splits):
                if not getattr(self, f"{split}_file"):
                    raise ValueError(f"--{split}-file: not given, and this run reads the {split} split; add "
                                     f"--{split}-file FILE, or give one file to split with --data")


@dataclass(frozen=True)
class Example:
    id: str
    dialogue: str
    references: tuple[str, ...]  # 1 human summary for train and validation, 3 for test
    topic: str


def load_data(data: DataConfig, split: str, max_samples: int | None = None) -> list[Example]:
    """The examples of one split of a run's data: your own files when it names them, else DialogSum's layout."""
    if not data.own_files:
        return load_split(data.source, split, max_samples, data.seed)
    from prompting.own_data import load_own_split

    return first_n(load_own_split(data, split), split, max_samples, data.seed)


def load_split(source: str, split: str, max_samples: int | None = None, seed: int = 42) -> list[Example]:
    """The examples of one split from a hub id or a local folder. `max_samples`: for train the first N of a shuffle
    fixed by `seed` (every kind of dialogue; N=64 is a subset of N=128); for validation and test the first N in
    file order, so runs with different seeds (other shots, say) score the same dialogues."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    if max_samples is not None and max_samples <= 0:
        raise ValueError(f"max_samples must be a positive number of dialogues, got {max_samples}")
    if is_local(source):
        examples = load_local(Path(source), split)
    else:
        from prompting.hub_layout import load_hub

        examples = load_hub(source, split)
    if not examples:  # a zero-row hub split; an empty local file is caught in load_local, with its name
        raise ValueError(f"split {split!r} of {source} holds no dialogues; check --data")
    return first_n(examples, split, max_samples, seed)


def first_n(examples: list[Example], split: str, max_samples: int | None, seed: int) -> list[Example]:
    """`max_samples` of them, as `load_split` says."""
    if max_samples is None or max_samples >= len(examples):
        return examples
    if split != "train":
        return examples[:max_samples]
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [examples[i] for i in sorted(order[:max_samples])]


def example_from_row(row: dict, where: str) -> Example:
    """One row of either layout: `fname|id, dialogue, summary|summary1..n, topic|topic1..n`."""
    dialogue = (row.get("dialogue") or "").strip()
    if not dialogue:
        raise ValueError(f"{where}: the row has no dialogue")
    keys = ["summary"] if "summary" in row else sorted(
        (k for k in row if re.fullmatch(r"summary\d+", k)), key=lambda k: int(k[len("summary"):]))
    references = tuple((row.get(k) or "").strip() for k in keys)
    if not references or not all(references):
        raise ValueError(f"{where}: the row has no summary (expected a 'summary' field, or 'summary1', 'summary2', ...)")
    row_id = str(row.get("fname") or row.get("id") or "").strip()
    if not row_id:
        raise ValueError(f"{where}: the row has no id (expected a 'fname' or 'id' field)")
    return Example(row_id, dialogue, references, (row.get("topic") or row.get("topic1") or "").strip())


# ---- a local folder ----------------------------------------------------------------------------------------------

def load_local(folder: Path, split: str) -> list[Example]:
    path = split_file(folder, split)
    try:
        if path.name.startswith(OFFICIAL_FILES[split]):  # one row per dialogue, all its summaries on it
            examples = [example_from_row(row, where) for where, row in read_jsonl(path)]
        else:  # the hub's layout saved locally: rows to fold into dialogues
            from prompting.hub_layout import group_references, read_rows

            examples = group_references(read_rows(path))
    except UnicodeDecodeError as err:  # the reader decodes in blocks: find the line from the byte offset
        raise ValueError(f"{path}:{bad_utf8_line(path)}: not valid UTF-8 text ({err.reason}, byte "
                         f"0x{err.object[err.start]:02x}); save the file as UTF-8") from err
    if not examples:
        raise ValueError(f"{path} is empty: no dialogues for split {split!r}; restore the file or point --data "
                         "at another folder")
    return examples


def bad_utf8_line(path: Path) -> int:
    """The 1-based line of the first byte in `path` that is not UTF-8."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return raw.count(b"\n", 0, err.start) + 1
    return 0


def split_file(folder: Path, split: str) -> Path:
    """The file that holds `split`: the official name first, then the hub's names; each may be gzipped (`.gz`, as
    this repository ships DialogSum in data/dialogsum/)."""
    expected = (f"{OFFICIAL_FILES[split]} (official layout) or {split}.jsonl / {split}.csv (the hub's layout)")
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"data folder {folder} {what}; expected a folder with {expected}, "
                                "or a hub id such as knkarthick/dialogsum")
    for name in (OFFICIAL_FILES[split], *(split + suffix for suffix in HUB_SUFFIXES)):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"data folder {folder} has no file for split {split!r}: expected {expected}")


def open_text(path: Path):
    """A text file, or a gzipped one (`.gz`), read as UTF-8."""
    return gzip.open(path, "rt", encoding="utf-8", newline="") if path.suffix == ".gz" else \
        open(path, encoding="utf-8", newline="")


def read_jsonl(path: Path) -> Iterator[tuple[str, dict]]:
    with open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a valid JSON line ({err.msg}); fix or remove that line") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object with dialogue and summary fields")
            yield f"{path}:{number}", row

"""A SAMSum-shaped file built from DialogSum's rows, for trying your own data without downloading any: speakers as
SAMSum writes them (`Amanda: text` lines instead of `#Person1#: text`, the names in the summaries too), the
columns named otherwise (`chat`, `gist`, `gist_2`, ...), no id column.

    python bench/samsum_shaped.py --split train --rows 600 --output samsum_like.csv
    python run.py --mode check-data --data samsum_like.csv --dialogue-column chat --summary-column gist

`--references K` writes K summary columns (`gist`, `gist_2`, ...): DialogSum's test dialogues have three.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAMES = ("Amanda", "Jerry", "Hannah", "Tom", "Lena", "Omar", "Priya", "Ken")
PERSON = re.compile(r"#Person(\d+)#")


def as_samsum(text: str) -> str:
    """"#Person1#: Hi.\\n#Person2#: Hello." -> "Amanda: Hi.\\nJerry: Hello." (in summaries: the names alone)."""
    return PERSON.sub(lambda m: NAMES[(int(m.group(1)) - 1) % len(NAMES)], text)


def samsum_rows(examples, references: int = 1) -> list[dict]:
    columns = ["gist"] + [f"gist_{k}" for k in range(2, references + 1)]
    return [{"chat": as_samsum(ex.dialogue), **{c: as_samsum(r) for c, r in zip(columns, ex.references)}}
            for ex in examples]


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # runs/own/ does not exist in a fresh clone
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    from prompting.dialogsum import load_split

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT / "data" / "dialogsum"))
    p.add_argument("--split", default="train", choices=("train", "validation", "test"))
    p.add_argument("--rows", type=int, default=600, help="the first N dialogues of the split")
    p.add_argument("--references", type=int, default=1, help="summary columns (test has 3 references)")
    p.add_argument("--output", required=True, help=".csv or .jsonl")
    args = p.parse_args()
    examples = load_split(args.data, args.split)[:args.rows]
    write(Path(args.output), samsum_rows(examples, args.references))
    print(f"{len(examples)} dialogues of {args.data} {args.split} written to {args.output}")


if __name__ == "__main__":
    main()

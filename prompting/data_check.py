"""What is wrong with a data set before anyone trains on it (`--mode check-data`): each check one `Finding`, a
one-line verdict (`ok`, `warn`, or `problem`: training would stop, or its scores would mislead) with the rows to
look at, and the numbers behind it.

The checks, in the order of the report:
1. rows per split;
2. empty or missing cells (dialogue, a summary, an id): training stops at the first (own_data.check_rows);
3. an id on two rows of a split (training stops), the same dialogue twice within a split (normalised text);
4. the same dialogue in two splits, exactly (normalised text equal) or nearly (word 5-gram Jaccard >= 0.8):
   near_duplicates.py;
5. prompts (the template with the dialogue, `</s>` counted) over `--max-input-tokens`: their dialogues are cut;
6. summaries over `--max-target-tokens`: cut when learned (train, validation's loss);
7. summary length against dialogue length, in words: a summary as long as its dialogue suggests swapped columns;
8. the speaker format: DialogSum's `#Person1#:` tags, SAMSum's `Name: text` lines, or none found.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from statistics import median

from prompting.near_duplicates import NEAR_THRESHOLD, SHINGLE_WORDS, exact_pairs, near_pairs, normalise
from prompting.own_data import Row
from prompting.prompts import zero_shot_prompt

SHOWN = 8  # row ids on a verdict line; data_check.json lists all
TAG = re.compile(r"#[^#\s]{1,20}#\s*:")  # DialogSum: "#Person1#: ..."
NAME_LINE = re.compile(r"^[^\W\d][\w .'-]{0,39}:\s", re.M)  # SAMSum: "Amanda: ..." at the start of a line


@dataclass
class Finding:
    level: str                # ok | warn | problem
    check: str                # which check
    text: str                 # the verdict
    ids: list[str] = field(default_factory=list)  # split:id of the rows to look at (pairs as "a = b" or "a ~ b")

    def line(self) -> str:
        shown = "" if not self.ids else ": " + ", ".join(self.ids[:SHOWN]) + (
            f", ... ({len(self.ids) - SHOWN} more in data_check.json)" if len(self.ids) > SHOWN else "")
        return f"{self.level}: {self.text}{shown}"


def name(split: str, row: Row) -> str:
    return f"{split}:{row.id or f'row-{row.number}'}"


def percentile(values: list[float], q: float) -> float:
    """Nearest rank, as prompts.PromptStats."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0


def over_budget(lengths: list[int], budget: int) -> dict:
    over = [n - budget for n in lengths if n > budget]
    return {"tokens_mean": round(sum(lengths) / max(1, len(lengths)), 1), "tokens_p95": percentile(lengths, 0.95),
            "tokens_max": max(lengths, default=0), "over": len(over),
            "over_by_mean": round(sum(over) / len(over), 1) if over else 0, "over_by_max": max(over, default=0)}


def speaker_format(dialogue: str) -> str:
    lines = [line for line in dialogue.splitlines() if line.strip()]
    if TAG.search(dialogue):
        return "#Person1#: tags"
    if lines and len(NAME_LINE.findall(dialogue)) >= len(lines) / 2:
        return "Name: lines"
    return "none found"


def check_rows_of(rows: dict[str, list[Row]], tokenizer, template: str, max_input_tokens: int,
                  max_target_tokens: int) -> tuple[list[Finding], dict]:
    """(the findings, in the module docstring's order; the numbers behind them) for the rows of each split."""
    numbers: dict = {"splits": {split: {"rows": len(split_rows)} for split, split_rows in rows.items()}}
    return [rows_per_split(rows), empty_cells(rows), *duplicates(rows), *leaks(rows),
            *token_budgets(rows, tokenizer, template, max_input_tokens, max_target_tokens, numbers),
            summary_lengths(rows, numbers), speakers(rows, numbers)], numbers


def rows_per_split(rows: dict[str, list[Row]]) -> Finding:
    sizes = ", ".join(f"{split} {len(split_rows):,}" for split, split_rows in rows.items())
    missing = [split for split in ("train", "validation", "test") if split not in rows]
    return Finding("warn" if missing else "ok", "rows",
                   f"rows: {sizes}" + (f"; no {' or '.join(missing)} file" if missing else ""))


def empty_cells(rows: dict[str, list[Row]]) -> Finding:
    empty = [f"{name(split, r)} ({what})" for split, split_rows in rows.items() for r in split_rows
             for what in (["dialogue"] if not r.dialogue else []) + (["summary"] if not all(r.references) else [])
             + (["id"] if not r.id else [])]
    return Finding("problem" if empty else "ok", "empty", f"{len(empty)} empty or missing cells (training stops at "
                   "the first)" if empty else "no empty or missing cell", empty)


def duplicates(rows: dict[str, list[Row]]) -> list[Finding]:
    """An id on two rows of a split; the same normalised dialogue twice in a split."""
    twice_ids, twice_dialogues = [], []
    for split, split_rows in rows.items():
        by_id, by_text = defaultdict(list), defaultdict(list)
        for r in split_rows:
            by_id[r.id].append(r)
            by_text[normalise(r.dialogue)].append(r)
        twice_ids += [" = ".join(f"{name(split, r)} (row {r.number})" for r in group)
                      for key, group in by_id.items() if key and len(group) > 1]
        twice_dialogues += [" = ".join(name(split, r) for r in group)
                            for key, group in by_text.items() if key and len(group) > 1]
    return [Finding("problem" if twice_ids else "ok", "duplicate ids", f"{len(twice_ids)} ids on two rows or more "
                    "of a split (training stops)" if twice_ids else "every id once per split", twice_ids),
            Finding("warn" if twice_dialogues else "ok", "duplicate dialogues",
                    f"{len(twice_dialogues)} dialogues appear twice or more within a split (normalised text)"
                    if twice_dialogues else "no dialogue twice within a split", twice_dialogues)]


def leaks(rows: dict[str, list[Row]]) -> list[Finding]:
    """Dialogues in two splits: exactly (normalised text), then nearly (the pairs not already exact)."""
    texts = {split: [r.dialogue for r in split_rows] for split, split_rows in rows.items()}
    exact = exact_pairs(texts)
    near = [p for p in near_pairs(texts) if normalise(texts[p.split_a][p.i]) != normalise(texts[p.split_b][p.j])]
    shingles = f"word {SHINGLE_WORDS}-gram Jaccard >= {NEAR_THRESHOLD}"

    def pair(p, sign: str) -> str:  # the later split first: the test row that leaked, then where from
        return f"{name(p.split_b, rows[p.split_b][p.j])} {sign} {name(p.split_a, rows[p.split_a][p.i])}"
    return [Finding("problem" if exact else "ok", "leak", f"{len(exact)} pairs of rows in two splits hold the same "
                    "dialogue (normalised text equal)" if exact else "no dialogue in two splits (normalised text)",
                    [pair(p, "=") for p in exact]),
            Finding("warn" if near else "ok", "near leak", f"{len(near)} more pairs in two splits are near "
                    f"duplicates ({shingles})" if near else f"no near duplicates across splits ({shingles})",
                    [f"{pair(p, '~')} ({p.similarity:.2f})" for p in near])]


def token_budgets(rows: dict[str, list[Row]], tokenizer, template: str, max_input_tokens: int,
                  max_target_tokens: int, numbers: dict) -> list[Finding]:
    """Prompts over --max-input-tokens and summaries over --max-target-tokens, per split (`numbers` filled in)."""
    cut = {"prompts": [], "summaries": []}
    for split, split_rows in rows.items():
        prompts = [zero_shot_prompt(r.dialogue, template) for r in split_rows]
        refs = [(r, ref) for r in split_rows for ref in r.references if ref]
        for kind, texts, owners, budget in (("prompts", prompts, split_rows, max_input_tokens),
                                            ("summaries", [ref for _, ref in refs], [r for r, _ in refs],
                                             max_target_tokens)):
            lengths = [len(ids) for ids in tokenizer(texts, verbose=False).input_ids] if texts else []
            numbers["splits"][split][kind] = over_budget(lengths, budget)
            cut[kind] += [name(split, r) for r, n in zip(owners, lengths) if n > budget]

    def verdict(kind: str, one: str, flag: str, budget: int, consequence: str) -> Finding:
        parts = [f"{s} {n[kind]['over']:,} (by {n[kind]['over_by_mean']:g} tokens on average, "
                 f"{n[kind]['over_by_max']} at most)" for s, n in numbers["splits"].items() if n[kind]["over"]]
        return Finding("warn" if parts else "ok", f"{one} tokens",
                       f"{kind} longer than {flag} {budget}: {'; '.join(parts)} ({consequence})" if parts
                       else f"every {one} fits {flag} {budget}", cut[kind])
    return [verdict("prompts", "prompt", "--max-input-tokens", max_input_tokens,
                    "their dialogues are cut, the question kept"),
            verdict("summaries", "summary", "--max-target-tokens", max_target_tokens, "cut when learned")]


def summary_lengths(rows: dict[str, list[Row]], numbers: dict) -> Finding:
    """Words of each summary over words of its dialogue; a summary as long as its dialogue is suspicious."""
    ratios, long = [], []
    for split, split_rows in rows.items():
        for r in split_rows:
            words = len(r.dialogue.split())
            for ref in filter(None, r.references):
                ratios.append(len(ref.split()) / max(1, words))
                if len(ref.split()) >= words:
                    long.append(name(split, r))
    spread = {"median": round(median(ratios), 3) if ratios else 0, "p5": round(percentile(ratios, 0.05), 3),
              "p95": round(percentile(ratios, 0.95), 3)}
    numbers["summary_to_dialogue_words"] = spread
    return Finding("warn" if long else "ok", "summary length",
                   (f"{len(long)} summaries as long as their dialogue or longer (swapped columns?); " if long else "")
                   + f"summaries have {spread['median']:.0%} of their dialogue's words (median; 5th-95th percentile "
                   f"{spread['p5']:.0%}-{spread['p95']:.0%})", long)


def speakers(rows: dict[str, list[Row]], numbers: dict) -> Finding:
    formats = Counter(speaker_format(r.dialogue) for split_rows in rows.values() for r in split_rows)
    numbers["speaker_formats"] = dict(formats)
    unlabelled = [name(split, r) for split, split_rows in rows.items() for r in split_rows
                  if speaker_format(r.dialogue) == "none found"]
    shares = ", ".join(f"{fmt} in {count:,}" for fmt, count in formats.most_common())
    return Finding("warn" if len(formats) > 1 else "ok", "speakers",
                   f"speaker format: {shares} of {sum(formats.values()):,} dialogues", unlabelled)

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
    """(the findings, the numbers) for the rows of each split."""
    findings, numbers = [], {"splits": {}}
    sizes = ", ".join(f"{split} {len(split_rows):,}" for split, split_rows in rows.items())
    missing = [split for split in ("train", "validation", "test") if split not in rows]
    findings.append(Finding("warn" if missing else "ok", "rows", f"rows: {sizes}" + (
        f"; no {' or '.join(missing)} file" if missing else "")))

    empty = [f"{name(s, r)} ({what})" for s, split_rows in rows.items() for r in split_rows
             for what in (["dialogue"] if not r.dialogue else []) + (["summary"] if not all(r.references) else [])
             + (["id"] if not r.id else [])]
    findings.append(Finding("problem" if empty else "ok", "empty",
                            f"{len(empty)} empty or missing cells (training stops at the first)" if empty
                            else "no empty or missing cell", empty))

    twice_ids, twice_dialogues = [], []
    for split, split_rows in rows.items():
        by_id, by_text = defaultdict(list), defaultdict(list)
        for r in split_rows:
            by_id[r.id].append(r)
            by_text[normalise(r.dialogue)].append(r)
        twice_ids += [" = ".join(name(split, r) + f" (row {r.number})" for r in group)
                      for key, group in by_id.items() if key and len(group) > 1]
        twice_dialogues += [" = ".join(name(split, r) for r in group) for key, group in by_text.items()
                            if key and len(group) > 1]
    findings.append(Finding("problem" if twice_ids else "ok", "duplicate ids",
                            f"{len(twice_ids)} ids on two rows or more of a split (training stops)" if twice_ids
                            else "every id once per split", twice_ids))
    findings.append(Finding("warn" if twice_dialogues else "ok", "duplicate dialogues",
                            f"{len(twice_dialogues)} dialogues appear twice or more within a split (normalised "
                            "text)" if twice_dialogues else "no dialogue twice within a split", twice_dialogues))

    texts = {split: [r.dialogue for r in split_rows] for split, split_rows in rows.items()}
    exact = exact_pairs(texts)
    near = [p for p in near_pairs(texts) if normalise(texts[p.split_a][p.i]) != normalise(texts[p.split_b][p.j])]
    findings.append(Finding("problem" if exact else "ok", "leak",
                            f"{len(exact)} dialogues are in two splits (normalised text equal)" if exact else
                            "no dialogue in two splits (normalised text)",
                            [f"{name(p.split_b, rows[p.split_b][p.j])} = {name(p.split_a, rows[p.split_a][p.i])}"
                             for p in exact]))
    findings.append(Finding("warn" if near else "ok", "near leak",
                            f"{len(near)} more pairs in two splits are near duplicates (word {SHINGLE_WORDS}-gram "
                            f"Jaccard >= {NEAR_THRESHOLD})" if near else
                            f"no near duplicates across splits (word {SHINGLE_WORDS}-gram Jaccard >= {NEAR_THRESHOLD})",
                            [f"{name(p.split_b, rows[p.split_b][p.j])} ~ {name(p.split_a, rows[p.split_a][p.i])} "
                             f"({p.similarity:.2f})" for p in near]))

    cut_prompts, cut_summaries, ratios, long_summaries, formats = [], [], [], [], Counter()
    no_speakers = []
    for split, split_rows in rows.items():
        prompts = [zero_shot_prompt(r.dialogue, template) for r in split_rows]
        prompt_lengths = [len(ids) for ids in tokenizer(prompts, verbose=False).input_ids] if prompts else []
        refs = [(r, ref) for r in split_rows for ref in r.references if ref]
        ref_lengths = [len(ids) for ids in tokenizer([ref for _, ref in refs], verbose=False).input_ids] if refs else []
        numbers["splits"][split] = {"rows": len(split_rows), "prompts": over_budget(prompt_lengths, max_input_tokens),
                                    "summaries": over_budget(ref_lengths, max_target_tokens)}
        cut_prompts += [name(split, r) for r, n in zip(split_rows, prompt_lengths) if n > max_input_tokens]
        cut_summaries += [name(split, r) for (r, _), n in zip(refs, ref_lengths) if n > max_target_tokens]
        for r in split_rows:
            words = len(r.dialogue.split())
            for ref in filter(None, r.references):
                ratios.append(len(ref.split()) / max(1, words))
                if len(ref.split()) >= words:
                    long_summaries.append(name(split, r))
            fmt = speaker_format(r.dialogue)
            formats[fmt] += 1
            if fmt == "none found":
                no_speakers.append(name(split, r))

    def budget_text(kind: str, flag: str, budget: int, what: str) -> str:
        parts = [f"{s} {n[kind]['over']:,} (by {n[kind]['over_by_mean']:g} tokens on average, {n[kind]['over_by_max']} "
                 f"at most)" for s, n in numbers["splits"].items() if n[kind]["over"]]
        return f"{what} longer than {flag} {budget}: {'; '.join(parts)}" if parts else \
            f"every {what[:-1]} fits {flag} {budget}"
    findings.append(Finding("warn" if cut_prompts else "ok", "prompt tokens",
                            budget_text("prompts", "--max-input-tokens", max_input_tokens, "prompts") +
                            (" (their dialogues are cut, the question kept)" if cut_prompts else ""), cut_prompts))
    findings.append(Finding("warn" if cut_summaries else "ok", "summary tokens",
                            budget_text("summaries", "--max-target-tokens", max_target_tokens, "summaries") +
                            (" (cut when learned)" if cut_summaries else ""), cut_summaries))
    numbers["summary_to_dialogue_words"] = {"median": round(median(ratios), 3) if ratios else None,
                                            "p5": round(percentile(ratios, 0.05), 3),
                                            "p95": round(percentile(ratios, 0.95), 3)}
    spread = numbers["summary_to_dialogue_words"]
    findings.append(Finding("warn" if long_summaries else "ok", "summary length",
                            (f"{len(long_summaries)} summaries as long as their dialogue or longer (swapped columns?); "
                             if long_summaries else "") +
                            f"summaries have {spread['median'] or 0:.0%} of their dialogue's words (median; 5th-95th "
                            f"percentile {spread['p5']:.0%}-{spread['p95']:.0%})", long_summaries))
    numbers["speaker_formats"] = dict(formats)
    shares = ", ".join(f"{fmt} in {count:,}" for fmt, count in formats.most_common())
    findings.append(Finding("warn" if len(formats) > 1 else "ok", "speakers",
                            f"speaker format: {shares} of {sum(formats.values()):,} dialogues", no_speakers))
    return findings, numbers

"""`python run.py --mode check-data`: a report on the data before anyone trains on it.

    python run.py --mode check-data --data chats.csv --dialogue-column chat --summary-column gist
    python run.py --mode check-data --data data/dialogsum --model models/baby-flan-t5

Reads the splits the run would read (your own files as they are, so every empty cell and duplicate id is listed
rather than the first one stopping the run; a DialogSum-layout folder or hub id through its loader), counts tokens
with `--model`'s tokenizer in the prompt the run would use (`--prompt`, or the one saved with `--adapter` or
`--model`, or the course's), and writes <output-dir>/data_check.md (the verdicts at the top, then the numbers) and
data_check.json (every row id behind each verdict). The checks are prompting/data_check.py's.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from eval.evaluate import as_record
from model.load import is_local, load_tokenizer
from modes.train_config import data_config
from prompting.adapter import check_adapter_folder
from prompting.data_check import check_rows_of
from prompting.dialogsum import SPLITS, DataConfig, load_data
from prompting.near_duplicates import NEAR_THRESHOLD, SHINGLE_WORDS
from prompting.own_data import Row, own_rows
from prompting.prompts import choose_template

REPORT, NUMBERS = "data_check.md", "data_check.json"


@dataclass(frozen=True)
class CheckDataRun:
    data: DataConfig
    model: str                       # whose tokenizer counts the tokens
    prompt: str
    prompt_from: str
    output_dir: Path
    overwrite: bool


def config_from_args(args) -> CheckDataRun:
    if args.adapter:
        check_adapter_folder(args.adapter)
    prompt, prompt_from = choose_template(args.prompt, args.adapter, args.model if is_local(args.model) else None)
    return CheckDataRun(data_config(args), args.model, prompt, prompt_from,
                        Path(args.output_dir or "runs/check-data"), args.overwrite)


def rows_of(data: DataConfig) -> dict[str, list[Row]]:
    """Your own files' rows as read; a DialogSum-layout source's examples as rows."""
    if data.own_files:
        return own_rows(data)
    return {split: [Row(str(data.source), i, ex.id, ex.dialogue, ex.references)
                    for i, ex in enumerate(load_data(data, split), start=1)] for split in SPLITS}


def run(config: CheckDataRun) -> dict:
    out = config.output_dir
    if (out / NUMBERS).exists() and not config.overwrite:
        raise ValueError(f"--output-dir {out} already holds a {NUMBERS}; pass --overwrite or choose another folder")
    start = time.perf_counter()
    rows = rows_of(config.data)
    tokenizer = load_tokenizer(config.model)
    data = config.data
    findings, numbers = check_rows_of(rows, tokenizer, config.prompt, data.max_input_tokens, data.max_label_tokens)
    seconds = round(time.perf_counter() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"data": as_record(data), "tokenizer": config.model, "prompt": config.prompt,
                "prompt_from": config.prompt_from, "near_duplicates": {"shingle_words": SHINGLE_WORDS,
                                                                       "jaccard_threshold": NEAR_THRESHOLD},
                "seconds": seconds}
    (out / NUMBERS).write_text(json.dumps({"verdicts": [f.__dict__ for f in findings], **numbers,
                                           "settings": settings}, indent=2) + "\n")
    source = data.source or ", ".join(f for f in (data.train_file, data.validation_file, data.test_file) if f)
    lines = [f"# Data check: {source}", "", *[f"- {f.line()}" for f in findings], "", "## Tokens per split", "",
             f"Prompts in {config.prompt_from} ({config.prompt!r}), `</s>` counted, with the tokenizer of "
             f"{config.model}; summaries likewise.", "",
             "| split | rows | prompt tokens mean / p95 / max | prompts over | summary tokens mean / p95 / max "
             "| summaries over |", "| --- | --- | --- | --- | --- | --- |"]
    for split, n in numbers["splits"].items():
        p, s = n["prompts"], n["summaries"]
        lines.append(f"| {split} | {n['rows']:,} | {p['tokens_mean']} / {p['tokens_p95']} / {p['tokens_max']} | "
                     f"{p['over']:,} | {s['tokens_mean']} / {s['tokens_p95']} / {s['tokens_max']} | {s['over']:,} |")
    lines += ["", f"Checked in {seconds} s. Every row id behind a verdict: {NUMBERS}.", ""]
    (out / REPORT).write_text("\n".join(lines))
    verdicts = "\n".join(f.line() for f in findings)
    return {"printout": f"{verdicts}\n\nreport: {out / REPORT} ({seconds} s)", "findings": findings,
            "output_dir": str(out)}

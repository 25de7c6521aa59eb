"""`python run.py --mode summarise`: summaries of your own dialogues, with any model and adapter.

    python run.py --mode summarise --model models/baby-flan-t5 --adapter runs/lora/adapter \\
        --input chats.csv --dialogue-column chat --output chats.summaries.csv
    echo "Amanda: Are you coming? ..." | python run.py --mode summarise --adapter runs/lora/adapter --input -

A file's rows are written to `--output` (.csv or .jsonl, as its name ends) with all their columns and one
more, `--summary-column` (default `prediction`, the column name of a run's predictions.csv, so `--mode score
--prediction-column prediction` scores it). `--input -` reads one dialogue from standard input and prints its
summary (and writes it too when `--output` is given). A progress bar counts the batches.

The summaries are made exactly as a run's evaluation makes them (modes/train.py's `evaluate`, modes/prompt.py):
the same prompt (`--prompt`, else the one saved with `--adapter` or `--model` by the run that trained it, else the
course's), cut inside its template to `--max-input-tokens`, the same greedy or beam decoding (`--max-new-tokens`,
`--num-beams`), batch size and precision; so for the same dialogues they equal that run's predictions.csv.
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from eval.score_file import cell_text, check_column, read_table
from model.device import choose_precision, resolve_device
from model.generate import GenerationConfig, generate
from model.load import is_local, load_model_and_tokenizer
from prompting.adapter import apply_adapter, check_adapter_folder
from prompting.dialogsum import TABLE_SUFFIXES, Example
from prompting.prompts import build_prompts, choose_template


@dataclass(frozen=True)
class SummariseRun:
    input: str                       # a .csv/.jsonl file, or "-": one dialogue on standard input
    output: Path | None              # .csv/.jsonl; with "-" optional (the summary is printed)
    dialogue_column: str
    summary_column: str              # the column the summaries are written to
    model: str
    random_init: bool
    seed: int
    adapter: str | None
    prompt: str
    prompt_from: str                 # --prompt, the prompt.json it was read from, or the course's
    max_input_tokens: int
    batch_size: int
    generation: GenerationConfig
    device: str
    precision: str
    overwrite: bool


def config_from_args(args) -> SummariseRun:
    if not args.input:
        raise ValueError("--mode summarise needs --input FILE (.csv or .jsonl) or --input - (one dialogue on "
                         "standard input)")
    output = Path(args.output) if args.output else None
    if args.input != "-" and output is None:
        raise ValueError(f"--input {args.input}: name the file to write with --output FILE (.csv or .jsonl)")
    if output is not None:
        if output.suffix.lower() not in TABLE_SUFFIXES:
            raise ValueError(f"--output {output}: expected a .csv or .jsonl file name")
        if args.input != "-" and output.resolve() == Path(args.input).resolve():
            raise ValueError(f"--output {output} is the --input file; write the summaries to another file")
        if output.exists() and not args.overwrite:
            raise ValueError(f"--output {output} exists; pass --overwrite or choose another name")
    if args.summary_column and len(args.summary_column) != 1:
        raise ValueError(f"--summary-column {' '.join(args.summary_column)}: summarise writes one column; name one")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.adapter:
        check_adapter_folder(args.adapter)
    prompt, prompt_from = choose_template(args.prompt, args.adapter, args.model if is_local(args.model) else None)
    device = resolve_device(args.device)
    return SummariseRun(args.input, output, args.dialogue_column or "dialogue",
                        (args.summary_column or ["prediction"])[0], args.model, args.random_init, args.seed,
                        args.adapter, prompt, prompt_from, args.max_input_tokens, args.batch_size,
                        GenerationConfig(args.max_new_tokens, args.num_beams), device.type,
                        choose_precision(args.precision, device)[0], args.overwrite)


def read_dialogues(config: SummariseRun) -> tuple[list[str], list[dict]]:
    """(columns, rows) of the input; every row has a dialogue, and the summary column is a new one."""
    if config.input == "-":
        text = sys.stdin.read().strip()
        if not text:
            raise ValueError("--input -: standard input held no dialogue")
        return [config.dialogue_column], [{config.dialogue_column: text}]
    columns, rows = read_table(config.input, "--input")
    check_column(config.input, columns, config.dialogue_column, "--dialogue-column")
    if config.summary_column in columns:
        raise ValueError(f"--input {config.input} already has a column {config.summary_column!r}; name the new "
                         "one with --summary-column NAME")
    for number, row in enumerate(rows, start=1):
        if None in row:
            raise ValueError(f"--input {config.input}, row {number}: more cells than the header has columns")
        if not cell_text(row.get(config.dialogue_column)).strip():
            raise ValueError(f"--input {config.input}, row {number}: the dialogue cell (--dialogue-column "
                             f"{config.dialogue_column}) is empty; fill it or remove the row")
    return columns, rows


def write_rows(path: Path, columns: list[str], rows: list[dict]) -> None:
    if path.suffix.lower() == ".jsonl":
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: v if isinstance(v, str) or v is None else json.dumps(v) for k, v in row.items()}
                         for row in rows)


def run(config: SummariseRun) -> dict:
    columns, rows = read_dialogues(config)
    examples = [Example(f"row-{i}", cell_text(row[config.dialogue_column]).strip(), (), "")
                for i, row in enumerate(rows, start=1)]
    device = torch.device(config.device)
    model, tokenizer = load_model_and_tokenizer(config.model, config.random_init, config.seed)
    if config.adapter:
        apply_adapter(model, config.adapter, base_model=config.model)
    model.to(device)
    prompts = build_prompts(examples, tokenizer, shots=0, max_tokens=config.max_input_tokens,
                            template=config.prompt).prompts
    summaries = generate(model, tokenizer, prompts, config.generation, config.batch_size, device,
                         config.max_input_tokens, config.precision).texts
    done = [{**row, config.summary_column: summary} for row, summary in zip(rows, summaries)]
    if config.output is not None:
        config.output.parent.mkdir(parents=True, exist_ok=True)
        write_rows(config.output, [*columns, config.summary_column], done)
    if config.input == "-":
        written = f"\n(written to {config.output})" if config.output else ""
        return {"printout": summaries[0] + written, "summaries": summaries}
    with_adapter = f" + {config.adapter}" if config.adapter else ""
    return {"printout": f"{len(done)} summaries of {config.input} by {config.model}{with_adapter} (prompt: "
                        f"{config.prompt_from}) written to {config.output}, column {config.summary_column!r}",
            "summaries": summaries}

"""`python run.py --mode score`: ROUGE for predictions that any tool wrote, one run folder per prediction column.

    python run.py --mode score --predictions results.csv --prediction-column peft_model_summaries \\
        --reference-column human_baseline_summaries --group-by row --output-dir runs/course

For each `--prediction-column` C this writes <output-dir>/C/ with the files every run has (metrics.json,
predictions.csv, side_by_side.md; eval/results.py), so `--mode compare --runs <output-dir>/C ...` reads them as
it reads trained runs. metrics.json's main scores follow `--group-by`, `--stemmer` and `--lsum-sentences`; its
`ways` hold the same predictions scored the several ways other tools score them (eval/rouge_ways.py), also
written as C/score.md. Then <output-dir>/report.md and report.png compare the columns, and <output-dir>/score.md
holds the two tables this mode prints: course-style (per row) and multi-reference (per dialogue).
"""
from __future__ import annotations

from pathlib import Path

from eval.report import write_report
from eval.results import finish_run, prepare_output_dir
from eval.rouge_ways import COURSE, plain_table, several_ways, ways_table
from eval.runs import read_runs
from eval.score_file import count_empty, read_items

MULTI_REFERENCE = "per dialogue, best of k (this project)"


def check_args(args) -> None:
    """The flags --mode score needs, before any file is read."""
    if not args.predictions:
        raise ValueError("--mode score needs --predictions FILE (a .csv or .jsonl file of predictions and references)")
    if not args.prediction_column:
        raise ValueError("--mode score needs --prediction-column NAME (one or more columns of model summaries)")
    if not args.reference_column:
        raise ValueError("--mode score needs --reference-column NAME (the column of human summaries)")
    if args.reference_column in args.prediction_column:
        raise ValueError(f"--reference-column {args.reference_column!r} is also a --prediction-column: a summary "
                         "scored against itself scores 1")
    if len(set(args.prediction_column)) != len(args.prediction_column):
        raise ValueError(f"--prediction-column {' '.join(args.prediction_column)}: a column is named twice")


def items_for_ways(args, column: str, items):
    """(row items, dialogue items or None, why None): the ways table needs both groupings of the same file."""
    def read(group_by):
        return read_items(args.predictions, column, args.reference_column, group_by, args.dialogue_column)

    if args.group_by == "dialogue":
        return read("row"), items, ""
    try:
        return items, read("dialogue"), ""
    except ValueError as err:  # --group-by row was asked for; the file need not group into dialogues
        return items, None, str(err)


def score_column(args, column: str, out_dir: Path) -> dict:
    """Score one prediction column into out_dir/column; returns its metrics."""
    items = read_items(args.predictions, column, args.reference_column, args.group_by, args.dialogue_column)
    row_items, dialogue_items, why_not = items_for_ways(args, column, items)
    ways = several_ways(row_items, dialogue_items, why_not)
    run_dir = prepare_output_dir(out_dir / column, overwrite=args.overwrite)
    info = {"model": column, "mode": "score", "predictions": str(args.predictions), "prediction_column": column,
            "reference_column": args.reference_column, "group_by": args.group_by,
            "dialogue_column": args.dialogue_column, "empty_predictions": count_empty(items), "ways": ways}
    metrics = finish_run(run_dir, items, [item.dialogue for item in items], [item.prediction for item in items],
                         info, use_stemmer=args.stemmer, sentences=args.lsum_sentences)
    (run_dir / "score.md").write_text("\n".join([f"# {column}: one set of predictions, several ways to score it",
                                                 "", *ways_table(ways), ""]))
    return metrics


def printout(results: list[dict], out_dir: Path, report: Path) -> str:
    """The two tables the command prints (and writes to out_dir/score.md), then where everything is."""
    def table(way_name: str, title: str) -> list[str]:
        rows = [(m["model"], next(w for w in m["ways"] if w["way"] == way_name)) for m in results]
        if not rows[0][1]["count"]:
            return [title, f"not scored: {rows[0][1]['why'].split('Not scored: ')[-1]}"]
        way = rows[0][1]
        return plain_table(title.format(k=way["references"]) + f" ({way['count']} {way['items']}s)", rows)

    course = table(COURSE, "course-style: each row against its own reference, stemmer on, text as written, exact mean")
    multi = table(MULTI_REFERENCE, "multi-reference: each dialogue against the best of its {k} references, stemmer on, "
                                   "sentences split, exact mean")
    empty = [f"{m['model']}: {m['empty_predictions']} empty prediction(s), scored 0 and counted"
             for m in results if m["empty_predictions"]]
    text = "\n".join([*course, "", *multi, *([""] + empty if empty else [])])
    (out_dir / "score.md").write_text(f"```text\n{text}\n```\n")
    return (f"{text}\n\nrun folders: {', '.join(m['output_dir'] for m in results)}; the several ways to score "
            f"each: <run folder>/score.md; report: {report}")


def run(args) -> dict:
    """Score every --prediction-column; returns {"printout": the tables, "report": path, "runs": [metrics]}."""
    check_args(args)
    out_dir = Path(args.output_dir or "runs/score")
    results = [score_column(args, column, out_dir) for column in args.prediction_column]
    notes = []
    if args.group_by == "row":
        notes.append(f"--group-by row: each of the {results[0]['examples']} rows was scored against the one human "
                     "summary on it (the course's way), so 'dialogues scored' counts rows; the multi-reference "
                     "scores are in each run's table of ways below.")
    report = write_report(read_runs([m["output_dir"] for m in results]), out_dir, notes=notes)
    return {"printout": printout(results, out_dir, report), "report": str(report), "runs": results}

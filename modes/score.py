"""`python run.py --mode score`: ROUGE for predictions that any tool wrote, one run folder per prediction column.

    python run.py --mode score --predictions results.csv --prediction-column peft_model_summaries \\
        --reference-column human_baseline_summaries --group-by row --output-dir runs/course

For each `--prediction-column` C this writes <output-dir>/C/ with the files every run has (metrics.json,
predictions.csv, side_by_side.md; eval/evaluate.py), so `--mode compare --runs <output-dir>/C ...` reads them as
it reads trained runs. metrics.json's main scores follow `--group-by`, `--stemmer` and `--lsum-sentences`; its
`ways` hold the same predictions scored the several ways other tools score them (eval/rouge_ways.py), also
written as C/score.md. Then <output-dir>/report.md and report.png compare the columns, and <output-dir>/score.md
holds the two tables this mode prints: course-style (per row) and multi-reference (per dialogue).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eval.evaluate import finish_run, prepare_output_dir
from eval.report import write_report
from eval.rouge_ways import COURSE, MULTI_REFERENCE, plain_table, several_ways, ways_table
from eval.runs import read_runs
from eval.score_file import count_empty, read_items


@dataclass(frozen=True)
class ScoreConfig:
    """What --mode score needs from the command line, checked when it is made (before any file is read)."""

    predictions: Path | None              # --predictions: .csv or .jsonl
    prediction_columns: tuple[str, ...]   # --prediction-column: one run folder each
    reference_column: str                 # --reference-column
    group_by: str = "row"                 # "row" | "dialogue"
    dialogue_column: str | None = None
    use_stemmer: bool = True
    lsum_sentences: bool = True           # split sentences for ROUGE-Lsum in the main scores
    output_dir: Path = Path("runs/score")
    overwrite: bool = False

    def __post_init__(self):
        if self.predictions is None:
            raise ValueError("--mode score needs --predictions FILE (a .csv or .jsonl file of predictions and "
                             "references)")
        if not self.prediction_columns:
            raise ValueError("--mode score needs --prediction-column NAME (one or more columns of model summaries)")
        if not self.reference_column:
            raise ValueError("--mode score needs --reference-column NAME (the column of human summaries)")
        if self.reference_column in self.prediction_columns:
            raise ValueError(f"--reference-column {self.reference_column!r} is also a --prediction-column: a "
                             "summary scored against itself scores 1")
        if len(set(self.prediction_columns)) != len(self.prediction_columns):
            raise ValueError(f"--prediction-column {' '.join(self.prediction_columns)}: a column is named twice")


def config_from_args(args) -> ScoreConfig:
    return ScoreConfig(Path(args.predictions) if args.predictions else None, tuple(args.prediction_column or ()),
                       args.reference_column, args.group_by, args.dialogue_column, args.stemmer, args.lsum_sentences,
                       Path(args.output_dir or "runs/score"), args.overwrite)


def items_for_ways(config: ScoreConfig, column: str, items):
    """(row items, dialogue items or None, why None): the ways table needs both groupings of the same file."""
    def read(group_by):
        return read_items(config.predictions, column, config.reference_column, group_by, config.dialogue_column)

    if config.group_by == "dialogue":
        return read("row"), items, ""
    try:
        return items, read("dialogue"), ""
    except ValueError as err:  # --group-by row was asked for; the file need not group into dialogues
        return items, None, str(err)


def score_column(config: ScoreConfig, column: str) -> dict:
    """Score one prediction column into <output dir>/column; returns its metrics."""
    items = read_items(config.predictions, column, config.reference_column, config.group_by,
                       config.dialogue_column)
    row_items, dialogue_items, why_not = items_for_ways(config, column, items)
    ways = several_ways(row_items, dialogue_items, why_not)
    run_dir = prepare_output_dir(config.output_dir / column, overwrite=config.overwrite)
    info = {"model": column, "mode": "score", "predictions": str(config.predictions), "prediction_column": column,
            "reference_column": config.reference_column, "group_by": config.group_by,
            "dialogue_column": config.dialogue_column, "empty_predictions": count_empty(items), "ways": ways}
    metrics = finish_run(run_dir, items, [item.dialogue for item in items], [item.prediction for item in items],
                         info, use_stemmer=config.use_stemmer, sentences=config.lsum_sentences)
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


def run(config: ScoreConfig) -> dict:
    """Score every --prediction-column; returns {"printout": the tables, "report": path, "runs": [metrics]}."""
    out_dir = config.output_dir
    results = [score_column(config, column) for column in config.prediction_columns]
    notes = []
    if config.group_by == "row":
        notes.append(f"--group-by row: each of the {results[0]['examples']} rows was scored against the one human "
                     "summary on it (the course's way), so 'dialogues scored' counts rows; the multi-reference "
                     "scores are in each run's table of ways below.")
    report = write_report(read_runs([m["output_dir"] for m in results]), out_dir, notes=notes)
    return {"printout": printout(results, out_dir, report), "report": str(report), "runs": results}

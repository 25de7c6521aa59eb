"""The comparison report: one table of runs, the gains over zero-shot, a few summaries side by side, a bar chart.

Input: finished runs (eval/runs.py reads them). Output: `report.md` and `report.png` in one folder. ROUGE is
shown in points (F-measure x 100), the way papers print it, each mean with its seeded 95% bootstrap interval
where the run recorded one (in brackets, and as error bars); metrics.json keeps fractions.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from eval.evaluate import distinct_share, unpaired_scores
from eval.memory_table import memory_section
from eval.rouge import ROUGE_TYPES
from eval.rouge_ways import with_interval, ways_table
from eval.runs import Run

HEADINGS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
NOT_KNOWN = "n/a"


def cell(value) -> str:
    """Text for a Markdown table cell: `|` would end the cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else NOT_KNOWN


def percent_trainable(metrics: dict) -> str:
    trainable, total = metrics.get("trainable_params"), metrics.get("total_params")
    if not isinstance(trainable, int) or not isinstance(total, int) or total <= 0:
        return NOT_KNOWN
    return f"{100 * trainable / total:.3g}%"


def duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return NOT_KNOWN
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def megabytes(value, scale: float = 1.0) -> str:
    return f"{value / scale:,.1f} MB" if isinstance(value, (int, float)) else NOT_KNOWN


def scores_table(runs: list[Run]) -> list[str]:
    lines = ["| run | model | " + " | ".join(HEADINGS[t] for t in ROUGE_TYPES)
             + " | trainable params | trainable % | training time | peak memory | artifact size |",
             "|" + " --- |" * (2 + len(ROUGE_TYPES) + 5)]
    for run in runs:
        m = run.metrics
        values = [run.name, m.get("model", NOT_KNOWN), *(with_interval(m, t) for t in ROUGE_TYPES),
                  count(m.get("trainable_params")), percent_trainable(m), duration(m.get("train_seconds")),
                  megabytes(m.get("peak_memory_mb")), megabytes(m.get("artifact_bytes"), scale=1e6)]
        lines.append("| " + " | ".join(cell(v) for v in values) + " |")
    return lines


def share(value) -> str:
    return f"{100 * value:.0f}%" if isinstance(value, (int, float)) else NOT_KNOWN


def course_style_table(runs: list[Run]) -> list[str]:
    """The course notebook's way: every (dialogue, human summary) pair its own row, text as written."""
    styled = [run for run in runs if run.metrics.get("course_style")]
    if not styled:
        return []
    types = ("rouge1", "rouge2", "rougeL")
    lines = ["| run | rows | " + " | ".join(HEADINGS[t] for t in types) + " | repeats a phrase |",
             "|" + " --- |" * (3 + len(types))]
    for run in styled:
        m = run.metrics["course_style"]
        lines.append("| " + " | ".join(cell(v) for v in [run.name, m["rows"], *(with_interval(m, t) for t in types),
                                                          share(run.metrics.get("degenerate_share"))]) + " |")
    return lines


def dependence(run: Run) -> tuple[float, float] | None:
    """(distinct share, ROUGE-1 on another dialogue) from metrics.json, or from predictions.csv for a run written
    before metrics.json held them: the rows are the examples in order, their reference_* columns the references."""
    if run.metrics.get("unpaired"):
        return run.metrics["distinct_share"], run.metrics["unpaired"]["rouge1"]
    examples = [SimpleNamespace(references=tuple(row[k] for k in row if k.startswith("reference_") and row[k]))
                for row in run.rows]
    predictions = [row["prediction"] for row in run.rows]
    unpaired = unpaired_scores(examples, predictions, run.metrics.get("use_stemmer", True))
    return (distinct_share(predictions), unpaired["rouge1"]) if unpaired else None


def dependence_table(runs: list[Run]) -> list[str]:
    """Does each summary depend on its dialogue? ROUGE-1 paired, against another dialogue's references, the gap."""
    measured = [(run, found) for run in runs if (found := dependence(run))]
    if not measured:
        return []
    lines = ["| run | distinct summaries | ROUGE-1 | ROUGE-1 on another dialogue | owed to the dialogue |",
             "| --- | --- | --- | --- | --- |"]
    for run, (distinct, other) in measured:
        paired = run.metrics["rouge1"]
        lines.append("| " + " | ".join([cell(run.name), f"{100 * distinct:.1f}%", f"{100 * paired:.2f}",
                                        f"{100 * other:.2f}", f"{100 * (paired - other):+.2f}"]) + " |")
    return lines


def baseline_of(runs: list[Run]) -> Run:
    """The zero-shot run if there is one, else the first run."""
    return next((run for run in runs if run.metrics.get("mode") == "zero-shot"), runs[0])


def gains_table(runs: list[Run], baseline: Run) -> list[str]:
    lines = ["| run | " + " | ".join(HEADINGS[t] for t in ROUGE_TYPES) + " |", "|" + " --- |" * (1 + len(ROUGE_TYPES))]
    for run in runs:
        if run is not baseline:
            gains = [f"{100 * (run.metrics[t] - baseline.metrics[t]):+.2f}" for t in ROUGE_TYPES]
            lines.append("| " + " | ".join([cell(run.name), *gains]) + " |")
    return lines


def side_by_side(runs: list[Run], how_many: int = 3) -> list[str]:
    """The first dialogues that every run summarised: the dialogue, the human summary, each run's summary."""
    by_id = [{row["id"]: row for row in run.rows} for run in runs]
    shared = [row["id"] for row in runs[0].rows if all(row["id"] in rows for rows in by_id)][:how_many]
    lines = []
    for dialogue_id in shared:
        first = by_id[0][dialogue_id]
        lines += [f"### {dialogue_id}", ""]
        if first["dialogue"].strip():  # a predictions file scored by --mode score may not hold the dialogue
            lines += ["```text", first["dialogue"].strip(), "```", ""]
        lines.append(f"- **human**: {first['reference_1'].strip() or '(empty)'}")
        lines += [f"- **{run.name}**: {rows[dialogue_id]['prediction'].strip() or '(empty)'}"
                  for run, rows in zip(runs, by_id)]
        lines.append("")
    return lines


def consistency_notes(runs: list[Run]) -> list[str]:
    """What makes the rows not comparable: different dialogues or a different stemmer setting."""
    notes = []
    ids = [[row["id"] for row in run.rows] for run in runs]
    if any(sorted(other) != sorted(ids[0]) for other in ids[1:]):
        notes.append("The runs were evaluated on different dialogues: their scores are not directly comparable.")
    if len({run.metrics.get("use_stemmer") for run in runs}) > 1:
        notes.append("The runs differ in the stemmer setting (use_stemmer): their scores are not comparable.")
    return notes


def draw_chart(runs: list[Run], path: Path) -> None:
    """Grouped bars: one group per ROUGE type, one bar per run. Agg canvas: no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        xs = [k + (i - (len(runs) - 1) / 2) * width for k in range(len(ROUGE_TYPES))]
        m = run.metrics
        heights = [100 * m[t] for t in ROUGE_TYPES]
        errors = None  # the 95% interval as error bars, where the run recorded one: (2, types), below and above
        if all(f"{t}_low" in m and f"{t}_high" in m for t in ROUGE_TYPES):
            errors = [[100 * (m[t] - m[f"{t}_low"]) for t in ROUGE_TYPES],
                      [100 * (m[f"{t}_high"] - m[t]) for t in ROUGE_TYPES]]
        bars = ax.bar(xs, heights, width, label=run.name, yerr=errors, capsize=2)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(ROUGE_TYPES)), [HEADINGS[t] for t in ROUGE_TYPES])
    ax.set_ylabel("F-measure (points)")
    ax.set_title("ROUGE on DialogSum")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def stemmer_words(runs: list[Run]) -> str:
    settings = {run.metrics.get("use_stemmer") for run in runs}
    return {frozenset({True}): "on", frozenset({False}): "off"}.get(frozenset(settings), "mixed (see notes)")


def write_report(runs: list[Run], out_dir: Path, notes: list[str] = ()) -> Path:
    """Write report.md and report.png into out_dir; return the path of report.md."""
    if not runs:
        raise ValueError("nothing to compare: give at least one run folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    baseline = baseline_of(runs)
    draw_chart(runs, out_dir / "report.png")
    examples = sorted({str(run.metrics.get("examples", len(run.rows))) for run in runs})
    lines = ["# FLAN-T5 on DialogSum: the comparison", "",
             f"Dialogues scored: {', '.join(examples)}. ROUGE F-measure in points (x 100), exact mean over the "
             f"dialogues; with several human summaries, the best one per ROUGE type. Porter stemmer: "
             f"{stemmer_words(runs)}.", ""]
    lsum = runs[0].metrics.get("rougeLsum_sentences")
    if lsum:
        lines += [f"{lsum}.", ""]
    lines += ["## Scores", "", "ROUGE in points with [a seeded 95% bootstrap interval of the mean] where the run "
              "recorded one.", "", *scores_table(runs), "", "![ROUGE of each run](report.png)", ""]
    course = course_style_table(runs)
    if course:
        lines += ["## Course-style scores", "", "Each test dialogue's three human summaries as three rows, each "
                  "scored on its own, texts as written: the way the course notebook scores (its FLAN-T5-base table "
                  "is in this form). \"Repeats a phrase\": the share of summaries in which four words come twice, "
                  "the mark of a degenerate output.", "", *course, ""]
    dependence = dependence_table(runs)
    if dependence:
        lines += ["## Is each summary about its dialogue?", "", "ROUGE rewards the words all DialogSum summaries "
                  "share, so a summary scores well above zero on a dialogue it is not about. \"On another "
                  "dialogue\": each summary scored against the references of the dialogue n/2 places away; the "
                  "last column is what the summaries owe to their own dialogue (near 0: the model ignores its "
                  "input).", "", *dependence, ""]
    if len(runs) > 1:
        lines += [f"## Gains over {baseline.name} (points)", "", *gains_table(runs, baseline), ""]
    for run in runs:  # runs from --mode score: the same predictions scored the ways other tools do
        if run.metrics.get("ways"):
            lines += [f"## {run.name}: one set of predictions, several ways to score it", "",
                      *ways_table(run.metrics["ways"]), ""]
    lines += memory_section([(run.name, run.metrics) for run in runs])
    lines += ["## Side by side", "", *side_by_side(runs)]
    all_notes = [*notes, *consistency_notes(runs)]
    if baseline.metrics.get("mode") != "zero-shot" and len(runs) > 1:
        all_notes.append(f"No zero-shot run among these: gains are over {baseline.name}.")
    if all_notes:
        lines += ["## Notes", "", *(f"- {note}" for note in all_notes), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path

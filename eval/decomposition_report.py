"""decomposition.json, decomposition.md and decomposition.png from `--mode analyse --snapshots`: the DoRA paper's
Figure 2 (Liu et al. 2024, arXiv:2402.09353, section 3) for the runs given.

Each row is one layer at one snapshot: Delta M (eq. 3) and Delta D (eq. 4) of its W_t against the pretrained W_0.
The figure has one panel per run, one point per (snapshot, layer), Delta D on x and Delta M on y, as the paper's.

The paper reads the slope of each checkpoint's points, one per layer: positive for LoRA at every step (magnitude
and direction move together), negative for full fine-tuning and for DoRA (large turns with small magnitude
changes, and the reverse). Here that is the Pearson correlation of Delta D and Delta M over the layers of one
target at one step, averaged over the steps ("within a step"; target "all": over every adapted layer of the step);
over all points at once ("pooled") it also holds the growth of both with training, which is positive for any method.
An |r| below SLOPE is read as no slope.
"""
from __future__ import annotations

import json
from pathlib import Path
from statistics import StatisticsError, correlation, mean

PAPER_SIGN = {"full": "negative", "lora": "positive", "dora": "negative"}  # section 3, Figure 2; section 4.1


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's r, or None where it is undefined (fewer than 3 points, or one coordinate constant)."""
    if len(xs) < 3:
        return None
    try:
        return correlation(xs, ys)
    except StatisticsError:
        return None


def grouped(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def correlations(rows: list[dict]) -> list[dict]:
    """Per run and target, and per run over all its targets ("all"): r pooled over all points, r within each step,
    and their mean."""
    result = []
    every_target = [{**row, "target": "all"} for row in rows]
    for (run, method, target), points in grouped(rows + every_target, "run", "method", "target").items():
        steps = {step: pearson([p["delta_d"] for p in ps], [p["delta_m"] for p in ps])
                 for (step,), ps in grouped(points, "step").items()}
        defined = [r for r in steps.values() if r is not None]
        result.append({"run": run, "method": method, "target": target, "points": len(points),
                       "pooled": pearson([p["delta_d"] for p in points], [p["delta_m"] for p in points]),
                       "by_step": steps, "within_step": mean(defined) if defined else None})
    return result


SLOPE = 0.3  # |r| below this is read as no slope, neither sign


def sign(r: float | None) -> str:
    return "-" if r is None else ("none" if abs(r) < SLOPE else "positive" if r > 0 else "negative")


def cell(r: float | None) -> str:
    return "-" if r is None else f"{r:+.3f}"


def table_lines(rows: list[dict]) -> list[str]:
    lines = ["| run | method | step | target | layers | mean Delta D | mean Delta M |", "|" + " --- |" * 7]
    for (run, method, step, target), points in grouped(rows, "run", "method", "step", "target").items():
        lines.append(f"| {Path(run).name} | {method} | {step} | {target} | {len(points)} | "
                     f"{mean(p['delta_d'] for p in points):.3e} | {mean(p['delta_m'] for p in points):.3e} |")
    return lines


def correlation_lines(found: list[dict]) -> list[str]:
    lines = ["| run | method | target | points | r within a step (mean over steps) | its sign | r pooled | "
             "the paper's sign | agrees |", "|" + " --- |" * 9]
    for c in found:
        paper = PAPER_SIGN.get(c["method"], "-")
        agrees = "-" if c["within_step"] is None or paper == "-" else ("yes" if sign(c["within_step"]) == paper
                                                                       else "no")
        lines.append(f"| {Path(c['run']).name} | {c['method']} | {c['target']} | {c['points']} | "
                     f"{cell(c['within_step'])} | {sign(c['within_step'])} | {cell(c['pooled'])} | {paper} | "
                     f"{agrees} |")
    return lines


def draw_figure(rows: list[dict], path: Path) -> None:
    """One panel per run: Delta D (x) against Delta M (y), colour the step, marker the target (Figure 2)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = grouped(rows, "run", "method")
    fig = Figure(figsize=(4 * len(runs), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    steps = sorted({row["step"] for row in rows})
    markers = dict(zip(sorted({row["target"] for row in rows}), "o^sDvP*"))
    for ax, ((run, method), points) in zip(axes, runs.items()):
        for target, marker in markers.items():
            mine = [p for p in points if p["target"] == target]
            if mine:
                image = ax.scatter([p["delta_d"] for p in mine], [p["delta_m"] for p in mine], marker=marker, s=18,
                                   c=[p["step"] for p in mine], cmap="viridis", vmin=steps[0], vmax=steps[-1],
                                   label=target)
        ax.set_title(f"{method} ({Path(run).name})", fontsize=9)
        ax.set_xlabel("Delta D")
        ax.set_ylabel("Delta M")
        ax.ticklabel_format(style="sci", scilimits=(-2, 2))
        ax.legend(fontsize=7, title="target", title_fontsize=7)
    fig.colorbar(image, ax=list(axes), label="step")
    fig.savefig(path, dpi=80)


def write_decomposition(result: dict, out_dir: Path) -> Path:
    """decomposition.json (every row and correlation), decomposition.png and decomposition.md; returns the .md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    found = correlations(rows)
    (out_dir / "decomposition.json").write_text(json.dumps({**result, "correlations": found}) + "\n")
    draw_figure(rows, out_dir / "decomposition.png")
    base = f"`{result['model']}`" + (f", random weights (seed {result['seed']})" if result.get("random_init") else "")
    lines = ["# Magnitude and direction over training (Liu et al. 2024, section 3, Figure 2)", "",
             f"W_0: {base}. For each layer, at each snapshot t: Delta M = mean over output features of "
             "\\|m_t - m_0\\| (eq. 3) and Delta D = mean of 1 - cos(W_t, W_0) (eq. 4), m the norm of each row of "
             "torch's W (d_out, d_in), a column of the paper's.", "",
             "![Delta D against Delta M, one point per snapshot and layer](decomposition.png)", "",
             "## Correlation of Delta D and Delta M", "",
             "The paper reads the slope of each checkpoint's points across the layers: LoRA positive, full "
             "fine-tuning and DoRA negative. 'Within a step': Pearson's r over the layers of one target at one "
             "step, averaged over the steps (target 'all': over every adapted layer of the step); 'pooled': over "
             f"all points, which also holds both growing with the steps. \\|r\\| < {SLOPE}: no slope.", "",
             *correlation_lines(found), "",
             "## Means over the layers of each target", "", *table_lines(rows), "",
             "Every layer's values: decomposition.json.", ""]
    path = out_dir / "decomposition.md"
    path.write_text("\n".join(lines))
    return path

"""variants.md and variants.png: LoRA's family (lora, dora, pissa, loraplus, qlora) trained with the same data,
steps, seed and rank (modes/sweep.py --variants), side by side: ROUGE with its 95% interval, the validation loss
over the steps, trainable parameters, time per step, the weights' bytes (computed) and the peak (measured), and
the adapter's bytes."""
from __future__ import annotations

import json
from pathlib import Path

from eval.memory_table import mib

WHAT = {"lora": "LoRA (Hu et al. 2021)", "dora": "DoRA: magnitude and direction (Liu et al. 2024)",
        "pissa": "PiSSA: A, B from W's top-r SVD (Meng et al. 2024)",
        "loraplus": "LoRA+: lr_B = lambda lr_A (Hayou et al. 2024)", "qlora": "QLoRA: NF4 base (Dettmers et al. 2023)"}


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, validation loss) from the run's train_log.jsonl (train_loop/loop.py writes it)."""
    path = Path(run_dir) / "train_log.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]


def with_interval(m: dict, key: str) -> str:
    low, high = m.get(f"{key}_low"), m.get(f"{key}_high")
    interval = f" [{100 * low:.2f}, {100 * high:.2f}]" if low is not None and high is not None else ""
    return f"{100 * m[key]:.2f}{interval}"


def draw_variants(rows: list[tuple[str, dict]], out_dir: Path, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    curves, bars = fig.subplots(1, 2)
    for name, _ in rows:
        points = val_curve(out_dir / name)
        if points:
            curves.plot(*zip(*points), "o-", label=name, markersize=3)
    curves.set_xlabel("optimiser step")
    curves.set_title("validation loss", fontsize=9)
    curves.legend(fontsize=7)
    for i, (name, m) in enumerate(rows):
        low, high = m.get("rougeL_low", m["rougeL"]), m.get("rougeL_high", m["rougeL"])
        bars.errorbar([i], [100 * m["rougeL"]], yerr=[[100 * (m["rougeL"] - low)], [100 * (high - m["rougeL"])]],
                      fmt="o", capsize=4)
    bars.set_xticks(range(len(rows)), [name for name, _ in rows])
    bars.set_title("ROUGE-L (points) with its 95% interval", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write_variants(rows: list[tuple[str, dict]], out_dir: Path, settings: dict) -> Path:
    """rows: (run folder name = variant, the run's metrics.json); returns variants.md's path."""
    out_dir = Path(out_dir)
    draw_variants(rows, out_dir, out_dir / "variants.png")
    lines = ["# LoRA's family", "", "Every run: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + "; the same "
             "A's seed for all (PiSSA computes its A and B from W).", "",
             "| run | what | trainable params | best val loss | ROUGE-1 [95%] | ROUGE-2 | ROUGE-L [95%] | time per "
             "step | weights (computed) | peak (measured) | adapter size |", "|" + " --- |" * 11]
    for name, m in rows:
        ledger, val = m.get("memory_ledger", {}), m.get("best_val_loss")
        per_step = m["train_seconds"] / max(1, m.get("steps") or 1)
        lines.append(f"| [{name}]({name}/metrics.json) | {WHAT.get(name, name)} | {m['trainable_params']:,} | "
                     f"{'n/a' if val is None else f'{val:.4f}'} | {with_interval(m, 'rouge1')} | "
                     f"{100 * m['rouge2']:.2f} | {with_interval(m, 'rougeL')} | {per_step:.2f} s | "
                     f"{mib(ledger.get('weights_bytes'))} | {mib(ledger.get('peak_bytes'))} | "
                     f"{m['artifact_bytes'] / 1e3:,.1f} kB |")
    lines += ["", "![validation loss over the steps; ROUGE-L with its interval](variants.png)", "",
              "Weights: every parameter and buffer, numel x element size (QLoRA's NF4 codes and absmax are buffers). "
              "PiSSA's adapter is saved as plain LoRA of rank 2r on the original base (lora/pissa.py), hence twice "
              "the bytes. Time per step includes validation and checkpoints.", ""]
    if any("peak_reserved_bytes" not in m.get("memory_ledger", {"peak_reserved_bytes": 0}) for _, m in rows):
        lines += ["Peak on CPU: the process's peak resident set size during each run's training. The runs share "
                  "one process, which keeps memory an earlier run freed: a later run's peak includes it.", ""]
    path = out_dir / "variants.md"
    path.write_text("\n".join(lines))
    return path

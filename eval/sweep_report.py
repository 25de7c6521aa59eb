"""sweep.md and sweep.png: LoRA runs that differ only in rank or target set, side by side (the LoRA paper's Tables
5 and 6): validation loss and ROUGE against trainable parameters, training time, adapter size and memory."""
from __future__ import annotations

from pathlib import Path

from eval.memory_table import mib


def draw_sweep(rows: list[tuple[str, int, str, dict]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    params = [m["trainable_params"] for *_, m in rows]
    panels = [("best validation loss", [m.get("best_val_loss") for *_, m in rows]),
              ("ROUGE-L (points)", [100 * m["rougeL"] for *_, m in rows]),
              ("training time (s)", [m["train_seconds"] for *_, m in rows])]
    for ax, (title, values) in zip(axes, panels):
        ax.plot(params, values, "o")
        for (name, *_), x, y in zip(rows, params, values):
            ax.annotate(name, (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_title(title, fontsize=9)
    twin = axes[2].twinx()
    twin.plot(params, [m["artifact_bytes"] / 1e6 for *_, m in rows], "s", color="tab:orange")
    twin.set_ylabel("adapter size (MB, squares)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def write_sweep(rows: list[tuple[str, int, str, dict]], out_dir: Path, analysis: Path | None, settings: dict) -> Path:
    """rows: (run folder name, r, targets, the run's metrics.json); returns sweep.md's path."""
    out_dir = Path(out_dir)
    draw_sweep(rows, out_dir / "sweep.png")
    lines = ["# LoRA sweep", "", "Every run: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".", "",
             "| run | r | targets | A's init seed | trainable params | best val loss | ROUGE-1 | ROUGE-L | "
             "training time | adapter size | weights + grads + optimiser state | peak (measured) |",
             "|" + " --- |" * 12]
    for name, r, targets, m in rows:
        ledger = m.get("memory_ledger", {})
        static = sum(ledger.get(k, 0) for k in ("weights_bytes", "gradients_bytes", "optimizer_state_bytes"))
        val = m.get("best_val_loss")
        seed = m.get("lora", {}).get("init_seed", "-")  # A drawn from seed + k in run k (modes/sweep.py)
        lines.append(f"| [{name}]({name}/metrics.json) | {r} | {targets} | {seed} | {m['trainable_params']:,} | "
                     f"{'n/a' if val is None else f'{val:.4f}'} | {100 * m['rouge1']:.2f} | {100 * m['rougeL']:.2f} | "
                     f"{m['train_seconds']:.1f} s | {m['artifact_bytes'] / 1e3:,.1f} kB | {mib(static)} | "
                     f"{mib(ledger.get('peak_bytes'))} |")
    lines += ["", "![validation loss, ROUGE-L, time and adapter size against trainable parameters](sweep.png)", ""]
    if any("peak_reserved_bytes" not in m.get("memory_ledger", {"peak_reserved_bytes": 0}) for *_, m in rows):
        lines += ["Peak on CPU: the process's peak resident set size during each run's training. The runs share "
                  "one process, which keeps memory an earlier run freed (train_loop/cpu_speed.py): a later run's "
                  "peak includes it. Separate processes measure each run alone.", ""]
    if analysis is not None:
        lines += [f"Subspace analysis of the adapters: [{analysis.relative_to(out_dir)}]"
                  f"({analysis.relative_to(out_dir)}).", ""]
    path = out_dir / "sweep.md"
    path.write_text("\n".join(lines))
    return path

"""Two or more pretraining runs side by side: their validation losses at the steps they share, and one picture.

    python bench/compare_pretraining.py runs/pretrain runs/pretrain-adafactor --output docs/pretraining_optimisers.png

Each run folder is one `--mode pretrain` run; its `train_log.jsonl` holds the validation loss (`val_loss`) at every
`--eval-every` steps and its `metrics.json` (written when the run finished) the optimiser, peak rate and steps.
Same data, same held-out dialogues and the same seed make the losses comparable step for step; the schedules may
differ (each decays to 0 over its own `--max-steps`), so the table names them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train_loop.loop import LOG_FILE, read_log  # noqa: E402


def describe(folder: Path) -> str:
    """'adamw lr 0.0015, 1,200 steps' from the run's metrics.json; 'unfinished' before it has one."""
    path = folder / "metrics.json"
    if not path.is_file():
        return "unfinished"
    info = json.loads(path.read_text())
    optim = info["train"]["optim"] if "train" in info else info  # runs before the record was nested keep it flat
    return f"{optim.get('optimizer', 'adamw')} lr {optim['lr']:g}, {info['steps']:,} steps"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="pretraining run folders")
    p.add_argument("--output", type=Path, default=None, help="a .png of the validation curves")
    args = p.parse_args()
    curves = {}
    for folder in args.runs:
        if not (folder / LOG_FILE).is_file():
            raise SystemExit(f"compare_pretraining.py: error: {folder}/{LOG_FILE} not found: give pretraining run "
                             f"folders (--output-dir of --mode pretrain)")
        curves[folder] = {r["step"]: r["val_loss"] for r in read_log(folder / LOG_FILE) if "val_loss" in r}
    shared = sorted(set.intersection(*(set(c) for c in curves.values())))
    names = [f"{f} ({describe(f)})" for f in curves]
    print("validation loss per label token at the steps every run measured")
    print("| step | " + " | ".join(names) + " |")
    print("| ---: |" + " ---: |" * len(names))
    for step in shared:
        print(f"| {step:,} | " + " | ".join(f"{c[step]:.3f}" for c in curves.values()) + " |")
    print("best: " + "; ".join(f"{f}: {min(c.values()):.3f} at step {min(c, key=c.get):,}" for f, c in curves.items()))
    if args.output:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for name, curve in zip(names, curves.values()):
            ax.plot(list(curve), list(curve.values()), "o-", markersize=3, label=name)
        ax.set_xlabel("optimiser step (batch 16)")
        ax.set_ylabel("validation loss per label token")
        ax.set_title("pretraining the baby model: the same data, two optimisers")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.output, dpi=100)
        plt.close(fig)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

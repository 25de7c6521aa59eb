"""What a run leaves to look at: `train_log.jsonl` (one line per optimiser step) and `loss_curve.png`.

Each line of the log is a JSON object. Training steps: `{"step", "epoch", "loss", "lr", "grad_norm", "tokens",
"tokens_per_s", "peak_memory_mb"}`; validation: `{"step", "val_loss"}`. `loss` is the mean cross-entropy per
label token over the whole optimiser step (all accumulated micro-batches), the number `Seq2SeqTrainer` logs with
`logging_steps=1` when its loss is normalised by the step's token count. `lr` is the rate that step used.

A resumed run first cuts the log back to the checkpoint's step: lines written after the checkpoint by the
interrupted process describe steps that will be run again.
"""
from __future__ import annotations

import json
import resource
from pathlib import Path

import torch

LOG_FILE = "train_log.jsonl"
CURVE_FILE = "loss_curve.png"


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: the most memory tensors have held; CPU: the process's peak resident set size (Linux reports KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


class TrainLog:
    """Appends one JSON line per record; flushed each time so a killed run keeps what it logged."""

    def __init__(self, folder: Path | None, resume_step: int = 0):
        self.path = None if folder is None else Path(folder) / LOG_FILE
        if self.path is None:
            return
        kept = read_log(self.path) if self.path.is_file() else []
        kept = [r for r in kept if r["step"] <= resume_step] if resume_step else []
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict]:
    """The records of a log; a last line cut short by a kill is dropped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def plot_loss_curve(log_path: Path, png_path: Path, title: str = "") -> None:
    """Training loss per step and validation loss, on one axis (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss (per step)", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy per label token")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)

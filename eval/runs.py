"""Reading run folders back (metrics.json + predictions.csv, as eval/evaluate.py writes them) for the report.

Checked on the way in, so that a wrong folder gives one line naming the file and what is missing rather than a
KeyError deep inside the report.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from eval.rouge import ROUGE_TYPES

PREDICTION_COLUMNS = ("id", "dialogue", "reference_1", "prediction")


@dataclass
class Run:
    """One finished run: its folder, what metrics.json says, and the rows of predictions.csv."""

    name: str
    folder: Path
    metrics: dict
    rows: list[dict[str, str]]


def read_metrics(folder: Path) -> dict:
    path = folder / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"--runs {folder}: no metrics.json in it; pass folders that run.py wrote "
                                "(e.g. runs/zero-shot, runs/lora)")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: expected a JSON object with the run's metrics")
    missing = [t for t in ROUGE_TYPES if not isinstance(metrics.get(t), (int, float))]
    if missing:
        raise ValueError(f"{path}: no ROUGE score for {', '.join(missing)}; was this run evaluated?")
    return metrics


def read_predictions(folder: Path) -> list[dict[str, str]]:
    path = folder / "predictions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"--runs {folder}: no predictions.csv in it")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for column in PREDICTION_COLUMNS:
            if column not in columns:
                raise ValueError(f"{path}: no column '{column}' (columns: {', '.join(columns) or 'none'})")
        return list(reader)


def read_run(folder: str | os.PathLike) -> Run:
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"--runs {path}: no such folder")
    return Run(name=path.name, folder=path, metrics=read_metrics(path), rows=read_predictions(path))


def read_runs(folders: list[str | os.PathLike]) -> list[Run]:
    """Read every folder; runs whose folder names collide are named by their whole path instead."""
    runs = [read_run(folder) for folder in folders]
    names = [run.name for run in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = str(run.folder)
    return runs

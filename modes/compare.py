"""`python run.py --mode compare`: the whole study in one command, or a report on runs already made.

    python run.py --mode compare [--model ... --data ...]        # zero-shot, full and LoRA, then the report
    python run.py --mode compare --runs runs/zero-shot runs/lora # only the report

The study runs each mode exactly as `run.py --mode <mode>` would, with the same flags, into
<output-dir>/zero-shot, <output-dir>/full and <output-dir>/lora, then compares those folders. The report
(eval/report.py) goes to <output-dir>/report.md and report.png.
"""
from __future__ import annotations

import argparse
import copy
import importlib
from pathlib import Path

from eval.report import write_report
from eval.runs import read_runs


def study_steps() -> list[tuple[str, object]]:
    """(mode, entry point) for each step of the study.

    Imported here, not at the top: `--runs` needs neither torch nor the models.
    """
    prompt, train = importlib.import_module("modes.prompt"), importlib.import_module("modes.train")
    return [("zero-shot", prompt.run), ("full", train.run), ("lora", train.run)]


def run_study(args: argparse.Namespace, out_dir: Path) -> list[Path]:
    """Run every step with a copy of the command line's flags, each into its own folder; return the folders."""
    folders = []
    for mode, entry_point in study_steps():
        step_args = copy.copy(args)
        step_args.mode, step_args.output_dir, step_args.runs = mode, str(out_dir / mode), None
        step_args.shots = None  # each prompting mode picks its own number of examples
        entry_point(step_args)
        folders.append(out_dir / mode)
    return folders


def run(args: argparse.Namespace) -> Path:
    """The report for `--runs`, or for a study run now; returns the path of report.md."""
    out_dir = Path(args.output_dir or "runs/compare")
    folders = args.runs or run_study(args, out_dir)
    return write_report(read_runs(folders), out_dir)

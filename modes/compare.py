"""`python run.py --mode compare`: the whole study in one command, or a report on runs already made.

    python run.py --mode compare [--model ... --data ...]        # zero-shot, full and LoRA, then the report
    python run.py --mode compare --runs runs/zero-shot runs/lora # only the report

The study runs each mode exactly as `run.py --mode <mode>` would, with the same flags, into
<output-dir>/zero-shot, <output-dir>/full and <output-dir>/lora, then compares those folders. The report
(eval/report.py) goes to <output-dir>/report.md and report.png.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eval.report import write_report
from eval.runs import read_runs


@dataclass(frozen=True)
class CompareRun:
    output_dir: Path                 # report.md and report.png; with the study, its three run folders too
    runs: tuple[Path, ...]           # --runs: folders already made (then no study runs)
    study: tuple = ()                # (runner, its config) for zero-shot, full and LoRA, each as its own mode builds it


def config_from_args(args) -> CompareRun:
    """--runs, or the study: each step's config built from the same flags by its own mode, each into its own folder.
    The runners are imported here, not at the top: `--runs` needs neither torch nor the models."""
    out = Path(args.output_dir or "runs/compare")
    if args.runs:
        return CompareRun(out, tuple(Path(folder) for folder in args.runs))
    from modes.prompt import config_from_args as prompt_config, run as prompt_run
    from modes.train import config_from_args as train_config, run as train_run

    study = ((prompt_run, prompt_config(args, "zero-shot", out / "zero-shot")),  # the mode's own shots: none
             (train_run, train_config(args, "full", out / "full")), (train_run, train_config(args, "lora", out / "lora")))
    return CompareRun(out, (), study)


def run(config: CompareRun) -> Path:
    """The report for `--runs`, or for the study run now; returns the path of report.md."""
    folders = list(config.runs)
    for run_step, step in config.study:
        run_step(step)
        folders.append(step.output_dir)
    return write_report(read_runs(folders), config.output_dir)

"""`python run.py --mode analyse`: what LoRA adapters learned, as the LoRA paper's section 7 measures it.

    python run.py --mode analyse --adapters runs/r8 runs/r64 [--full-model runs/full] --model google/flan-t5-base

Reads the adapters (this project's or peft's folders, or run folders holding `adapter/`), the base model's
weights of the adapted layers and, with --full-model, a fully fine-tuned model (a `save_pretrained` folder or a
run folder holding `model/`). The math is in lora/analysis.py; the files (analysis.json, analysis.md, figures)
are written by eval/analysis_report.py.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn


@dataclass(frozen=True)
class AnalyseConfig:
    adapters: tuple[Path, ...]  # as given: adapter folders or run folders holding adapter/
    model: str
    output_dir: Path
    full_model: Path | None = None
    random_init: bool = False
    seed: int = 42          # with --random-init: the seed the runs were trained from builds the same base weights
    energy: float = 0.9     # effective rank: singular values holding this share of the squared Frobenius norm


def adapter_folder(path: Path) -> Path:
    """An adapter folder, or a `--mode lora` run folder that holds one in `adapter/`."""
    if not (path / "adapter_config.json").is_file() and (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    return path


def model_folder(path: Path) -> Path:
    """A `save_pretrained` folder, or a `--mode full` run folder that holds one in `model/`."""
    if not path.is_dir():
        raise FileNotFoundError(f"--full-model {path}: no such folder")
    if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        return path / "model"
    return path


def linear_weights(model: nn.Module) -> dict:
    """W (d_out, d_in) of every nn.Linear, by module path, in the model's order."""
    return {name: m.weight.detach() for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def config_from_args(args) -> AnalyseConfig:
    if not args.adapters:
        raise ValueError("--mode analyse needs --adapters DIR [DIR ...] (adapter folders or --mode lora run folders)")
    return AnalyseConfig(adapters=tuple(Path(a) for a in args.adapters), model=args.model,
                         output_dir=Path(args.output_dir or Path("runs") / "analyse"),
                         full_model=model_folder(Path(args.full_model)) if args.full_model else None,
                         random_init=args.random_init, seed=args.seed)


def analyse_folders(config: AnalyseConfig) -> Path:
    """Read everything, compute, write; returns the path of analysis.md."""
    from eval.analysis_report import write_analysis
    from lora.analysis import analyse
    from lora.factors import read_factors
    from model.load import build_random_init, load_pretrained

    # Read first, so a bad folder fails before the model loads; analysis.json names each adapter as given
    factors = [replace(read_factors(adapter_folder(given)), folder=given) for given in config.adapters]
    base = build_random_init(config.model, seed=config.seed) if config.random_init else load_pretrained(config.model)
    full = linear_weights(load_pretrained(config.full_model)) if config.full_model else None
    result = analyse(linear_weights(base), factors, full, energy=config.energy, seed=config.seed)
    result = {"model": config.model, "random_init": config.random_init, "seed": config.seed,
              "full_model": str(config.full_model) if config.full_model else None, **result}
    return write_analysis(result, config.output_dir)


def run(config: AnalyseConfig) -> Path:
    path = analyse_folders(config)
    print(f"analysis of {len(config.adapters)} adapter(s) written to {path.parent}/ (analysis.md, analysis.json, "
          f"figures)")
    return path

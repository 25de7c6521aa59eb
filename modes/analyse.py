"""`python run.py --mode analyse`: what LoRA adapters learned, as the LoRA paper's section 7 measures it, and how
W's magnitude and direction moved over training, as the DoRA paper's section 3 does.

    python run.py --mode analyse --adapters runs/r8 runs/r64 [--full-model runs/full] --model google/flan-t5-base
    python run.py --mode analyse --snapshots runs/full runs/lora runs/dora --model google/flan-t5-base

Reads the adapters (this project's or peft's folders, or run folders holding `adapter/`), the base model's
weights of the adapted layers and, with --full-model, a fully fine-tuned model (a `save_pretrained` folder or a
run folder holding `model/`). The math is in lora/analysis.py; the files (analysis.json, analysis.md, figures)
are written by eval/analysis_report.py.

For an adapter of a `--mode lora` run, the A's it started from are drawn again: add_lora with the adapter's
settings and the run's recorded `lora.init_seed` (metrics.json) draws exactly what training drew. The subspace
similarity of two runs' initial A's is the baseline their trained A's must beat.

With --snapshots (run folders trained with --snapshot-every, train_loop/snapshots.py), each snapshot's W_t of each
layer is rebuilt on --model's pretrained W_0 (lora/decomposition.py) and its Delta M and Delta D measured; the
table, Figure 2 and the correlations are written by eval/decomposition_report.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class AnalyseConfig:
    adapters: tuple[Path, ...]  # as given: adapter folders or run folders holding adapter/ (may be empty)
    model: str
    output_dir: Path
    full_model: Path | None = None
    random_init: bool = False
    seed: int = 42          # with --random-init: the seed the runs were trained from builds the same base weights
    energy: float = 0.9     # effective rank: singular values holding this share of the squared Frobenius norm
    snapshots: tuple[Path, ...] = ()  # run folders with snapshots/ (--snapshot-every)


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


def recorded_init_seed(given: Path) -> int | None:
    """The seed a run's A was drawn from (`lora.init_seed` in its metrics.json), for a run folder or its adapter/;
    None for an adapter folder of its own (e.g. peft's) or a run that did not record it."""
    run_folder = given.parent if given.name == "adapter" else given
    metrics = run_folder / "metrics.json"
    if adapter_folder(given) == run_folder or not metrics.is_file():
        return None
    return json.loads(metrics.read_text()).get("lora", {}).get("init_seed")


def initial_A(model: nn.Module, adapter, init_seed: int) -> dict:
    """Layer -> A as `--mode lora` drew it before its first step: add_lora with the adapter's settings and the
    run's init seed on the base model, then the plain Linear layers back (W untouched, the caller's random state
    restored)."""
    from lora.layer import LoRAConfig, add_lora, lora_layers
    from lora.merge import unload_lora

    config = LoRAConfig(adapter.config["target_modules"], adapter.r, adapter.config["lora_alpha"],
                        init_seed=init_seed)
    with torch.random.fork_rng(devices=[]):
        add_lora(model, config)
        drawn = {name: layer.lora_A.detach().clone() for name, layer in lora_layers(model)}  # (r, d_in) each
    unload_lora(model, merge=False)
    for name, (A, _) in adapter.layers.items():
        if name not in drawn or drawn[name].shape != A.shape:
            raise ValueError(f"{adapter.folder}: the A drawn from init seed {init_seed} does not fit layer {name}; "
                             f"is this the --model (and --seed) the run was trained on?")
    return drawn


def config_from_args(args) -> AnalyseConfig:
    if not args.adapters and not args.snapshots:
        raise ValueError("--mode analyse needs --adapters DIR [DIR ...] (adapter folders or --mode lora run folders) "
                         "or --snapshots RUN [RUN ...] (run folders trained with --snapshot-every)")
    if args.full_model and not args.adapters:
        raise ValueError("--full-model is compared with --adapters; a full run's snapshots go to --snapshots")
    return AnalyseConfig(adapters=tuple(Path(a) for a in args.adapters or ()), model=args.model,
                         output_dir=Path(args.output_dir or Path("runs") / "analyse"),
                         full_model=model_folder(Path(args.full_model)) if args.full_model else None,
                         random_init=args.random_init, seed=args.seed,
                         snapshots=tuple(Path(r) for r in args.snapshots or ()))


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
    weights = linear_weights(base)  # taken before initial_A wraps (and unwraps) the Linear layers
    seeds = [recorded_init_seed(given) for given in config.adapters]
    initial = [initial_A(base, f, seed) if seed is not None else None for f, seed in zip(factors, seeds)]
    result = analyse(weights, factors, full, energy=config.energy, seed=config.seed, initial=initial)
    for entry, seed in zip(result["adapters"], seeds):
        entry["init_seed"] = seed
    result = {"model": config.model, "random_init": config.random_init, "seed": config.seed,
              "full_model": str(config.full_model) if config.full_model else None, **result}
    return write_analysis(result, config.output_dir)


def check_snapshot_base(run_folder: Path, info: dict, config: AnalyseConfig) -> None:
    """A snapshot's W_t is rebuilt on --model's W_0: it must be the W_0 the run started from."""
    from model.load import is_local

    same = (Path(info["model"]).resolve() == Path(config.model).resolve() if is_local(info["model"])
            else info["model"] == config.model)
    if not same or info["random_init"] != config.random_init or (config.random_init and info["seed"] != config.seed):
        given = f"--model {config.model}" + (f" --random-init --seed {config.seed}" if config.random_init else "")
        trained = f"--model {info['model']}" + (f" --random-init --seed {info['seed']}" if info["random_init"] else "")
        raise ValueError(f"--snapshots {run_folder}: trained from {trained}, analysed with {given}; give the "
                         f"run's own")
    if info.get("quantize_base"):
        raise ValueError(f"--snapshots {run_folder}: a {info['quantize_base']} base is not --model's W_0; "
                         f"analyse runs of full, lora or dora on a full-precision base")


def changes_over_training(weights: dict, run_folder: Path, snapshots: list) -> list[dict]:
    """One row per snapshot and layer: (Delta M, Delta D) of W_t against the pretrained W_0 (eq. 3, 4)."""
    from lora.decomposition import magnitude_direction_change, weight_at

    rows = []
    for snap in snapshots:
        layers: dict[str, dict] = {}
        for key, tensor in snap.tensors.items():  # "<module>.lora_A" -> layers["<module>"]["lora_A"]
            module, _, kind = key.rpartition(".")
            layers.setdefault(module, {})[kind] = tensor
        for module, tensors in layers.items():
            if module not in weights:
                raise ValueError(f"--snapshots {run_folder}: layer {module} of step {snap.step} is not a Linear of "
                                 f"--model {snap.info['model']}")
            W_t = weight_at(weights[module], tensors, snap.info["method"], snap.info["scaling"])
            delta_m, delta_d = magnitude_direction_change(weights[module], W_t)
            rows.append({"run": str(run_folder), "method": snap.info["method"], "step": snap.step, "layer": module,
                         "target": module.rsplit(".", 1)[-1], "delta_m": delta_m, "delta_d": delta_d})
    return rows


def analyse_snapshots(config: AnalyseConfig) -> Path:
    """Every run's snapshots against the pretrained W_0; returns the path of decomposition.md."""
    from eval.decomposition_report import write_decomposition
    from model.load import build_random_init, load_pretrained
    from train_loop.snapshots import read_snapshots

    runs = {folder: read_snapshots(folder) for folder in config.snapshots}  # a bad folder fails before loading
    for folder, snapshots in runs.items():
        for snap in snapshots:
            check_snapshot_base(folder, snap.info, config)
    base = build_random_init(config.model, seed=config.seed) if config.random_init else load_pretrained(config.model)
    weights = linear_weights(base)
    rows = [row for folder, snapshots in runs.items() for row in changes_over_training(weights, folder, snapshots)]
    return write_decomposition({"model": config.model, "random_init": config.random_init, "seed": config.seed,
                                "rows": rows}, config.output_dir)


def run(config: AnalyseConfig) -> Path:
    path = None
    if config.snapshots:
        path = analyse_snapshots(config)
        print(f"magnitude and direction of {len(config.snapshots)} run(s) written to {path.parent}/ "
              f"(decomposition.md, decomposition.json, decomposition.png)")
    if config.adapters:
        path = analyse_folders(config)
        print(f"analysis of {len(config.adapters)} adapter(s) written to {path.parent}/ (analysis.md, "
              f"analysis.json, figures)")
    return path

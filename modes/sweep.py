"""`python run.py --mode sweep`: the same LoRA training for several ranks or target sets, then one report.

    python run.py --mode sweep --ranks 1,2,4,8,16,32,64 ...              # the LoRA paper's Table 6
    python run.py --mode sweep --target-sets "q;k;v;o;q,k;q,v;q,k,v,o" --lora-r 8 ...   # Table 5, equal budget
    python run.py --mode sweep --variants lora,dora,pissa,loraplus,qlora ...            # LoRA's family

Every run gets the same flags (data, steps, seed, learning rate) except the rank, the targets and the seed of A's
initialisation, and writes its own run folder (`<output-dir>/r8`, `<output-dir>/q,v`), exactly what `--mode lora`
writes. Run k draws A from seed + k (--lora-init-seed, else --seed; metrics.json records it as `lora.init_seed`,
and `--mode lora --lora-init-seed` with it repeats the run): drawn from one seed, A of r=8 would be the first 8
rows of A of r=64 in the first adapted layer, and the subspace similarity would find that shared draw instead of
what training learned (the paper's Figure 3 compares independently trained adapters). Then `sweep.md` and
`sweep.png` (eval/sweep_report.py) compare them, and `analysis/` holds the subspace analysis (--mode analyse) of
the smallest and largest rank (r=8 against r=64 when both are there, as in the paper's Figure 3), with the
similarity of the initial A's beside it as the baseline that training must beat.

`--variants` runs LoRA's family (docs/lora-family.md) with the same data, steps, seed, rank and the *same* A's
seed: lora, dora (--lora-variant dora), pissa (--lora-variant pissa), loraplus (--loraplus-lr-ratio, the paper's
16 when left out), qlora (--quantize-base nf4, with --nf4-double-quant if given); `variants.md` and `variants.png`
(eval/variants_report.py) compare them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from modes.train_config import TrainRun


@dataclass(frozen=True)
class SweepRun:
    name: str       # the run folder's name
    r: int
    targets: str    # comma-separated, as --lora-targets
    init_seed: int  # A's initialisation: its own for every run, so the runs start independent (one for variants)
    variant: str = "lora"  # --variants: lora | dora | pissa | loraplus | qlora


def parse_ranks(text: str) -> list[int]:
    try:
        ranks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--ranks {text!r}: expected whole numbers separated by commas, e.g. 1,2,4,8") from None
    if not ranks or min(ranks) < 1 or len(set(ranks)) != len(ranks):
        raise ValueError(f"--ranks {text!r}: need distinct ranks of at least 1")
    return ranks


def parse_target_sets(text: str) -> list[str]:
    sets = [",".join(t.strip() for t in part.split(",") if t.strip()) for part in text.split(";")]
    sets = [s for s in sets if s]
    if len(sets) < 2 or len(set(sets)) != len(sets):
        raise ValueError(f"--target-sets {text!r}: need two or more distinct sets separated by ';', e.g. 'q;v;q,v'")
    return sets


@dataclass(frozen=True)
class SweepConfig:
    base: TrainRun                   # every run's settings but the rank, the targets and the run folder
    runs: tuple[SweepRun, ...]
    by_rank: bool                    # --ranks (else --target-sets or --variants)
    output_dir: Path
    by_variant: bool = False         # --variants


def config_from_args(args) -> SweepConfig:
    from modes.train_config import config_from_args as train_config

    out = Path(args.output_dir or Path("runs") / "sweep")
    base = train_config(args, "lora", out)
    runs = plan(args.ranks, args.target_sets, base, args.variants)
    return SweepConfig(base, tuple(runs), bool(args.ranks), out, bool(args.variants))


VARIANTS = ("lora", "dora", "pissa", "loraplus", "qlora")


def parse_variants(text: str, base: TrainRun) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"--variants {text!r}: need distinct names among {','.join(VARIANTS)}")
    if base.lora.variant != "lora" or base.quantize_base:
        raise ValueError("--variants sets each run's variant: leave out --lora-variant and --quantize-base")
    return names


def plan(ranks: str | None, target_sets: str | None, base: TrainRun, variants: str | None = None) -> list[SweepRun]:
    if sum(map(bool, (ranks, target_sets, variants))) != 1:
        raise ValueError("--mode sweep needs exactly one of --ranks (e.g. 1,2,4,8), --target-sets (e.g. 'q;v;q,v') "
                         "or --variants (e.g. lora,dora,pissa,loraplus,qlora)")
    first_seed = base.lora.init_seed  # --lora-init-seed, else --seed (modes/train_config.py's lora_config)
    if variants:  # one A for all: the variants differ in nothing else
        targets = ",".join(base.lora.targets)
        return [SweepRun(name, base.lora.r, targets, first_seed, name) for name in parse_variants(variants, base)]
    if ranks:
        targets = ",".join(base.lora.targets)
        return [SweepRun(f"r{r}", r, targets, first_seed + k) for k, r in enumerate(parse_ranks(ranks))]
    from lora.budget import equal_budget_ranks

    sets = parse_target_sets(target_sets)
    ranks = equal_budget_ranks(shape_only_model(base.model), sets, base.lora.r)
    return [SweepRun(targets, r, targets, first_seed + k) for k, (targets, r) in enumerate(zip(sets, ranks))]


def shape_only_model(name: str):
    """The architecture on the meta device: layer shapes without allocating or loading a weight."""
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    with torch.device("meta"):
        return AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(name))


def analysis_pair(runs: list[SweepRun]) -> list[SweepRun]:
    """The paper's Figure 3 pair (r=8 and r=64) when both ran, else the smallest and the largest rank."""
    by_rank = {run.r: run for run in runs}
    if 8 in by_rank and 64 in by_rank:
        return [by_rank[8], by_rank[64]]
    return [min(runs, key=lambda run: run.r), max(runs, key=lambda run: run.r)]


def variant_run(base: TrainRun, variant: str) -> TrainRun:
    """`base` as the named member of LoRA's family: only the variant's own setting changes."""
    from lora.loraplus import PAPER_RATIO

    ratio = (base.train.optim.loraplus_lr_ratio or PAPER_RATIO) if variant == "loraplus" else None
    train = replace(base.train, optim=replace(base.train.optim, loraplus_lr_ratio=ratio))
    lora = replace(base.lora, variant=variant if variant in ("dora", "pissa") else "lora")
    return replace(base, lora=lora, train=train, quantize_base="nf4" if variant == "qlora" else None,
                   double_quant=base.double_quant and variant == "qlora")


def run(config: SweepConfig) -> Path:
    from eval.sweep_report import write_sweep
    from modes.analyse import AnalyseConfig, analyse_folders
    from modes.train import run as train

    base, runs, out = config.base, config.runs, config.output_dir
    print(f"sweep: {len(runs)} LoRA runs ({', '.join(f'{r.name}: r={r.r} on {r.targets}' for r in runs)}; A drawn "
          f"from seeds {runs[0].init_seed}..{runs[-1].init_seed}) into {out}/")
    metrics = []
    for sweep_run in runs:
        lora = replace(base.lora, r=sweep_run.r, targets=tuple(sweep_run.targets.split(",")),
                       init_seed=sweep_run.init_seed)
        metrics.append(train(variant_run(replace(base, lora=lora, output_dir=out / sweep_run.name), sweep_run.variant)))
    shared = {"model": base.model, "random_init": base.random_init, "data": base.data.source,
              "max_train_samples": base.data.max_train_samples, "max_steps": base.train.max_steps,
              "epochs": base.train.epochs, "batch_size": base.batch_size, "lora_alpha": base.lora.alpha,
              "seed": base.seed, "lr": base.train.optim.lr}  # the flag's value, or the default the runs chose
    if config.by_variant:
        from eval.variants_report import write_variants

        return write_variants([(r.name, m) for r, m in zip(runs, metrics)], out, {**shared, "r": base.lora.r})
    analysed = analysis_pair(list(runs)) if config.by_rank else runs
    analysis = analyse_folders(AnalyseConfig(adapters=tuple(out / r.name / "adapter" for r in analysed),
                                             model=base.model, output_dir=out / "analysis",
                                             random_init=base.random_init, seed=base.seed))
    return write_sweep([(r.name, r.r, r.targets, m) for r, m in zip(runs, metrics)], out, analysis, shared)

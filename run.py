"""One command for the whole study: prompting, full fine-tuning, LoRA fine-tuning, evaluation, comparison.

    python run.py --mode zero-shot|one-shot|few-shot   # summaries from the unchanged model
    python run.py --mode full|lora                     # fine-tune, validate, then evaluate on --split
    python run.py --mode compare                       # the whole study, or --runs DIR... for runs already made
    python run.py --mode analyse --adapters DIR...     # what adapters learned (LoRA paper, section 7)
    python run.py --mode analyse --snapshots RUN...    # magnitude and direction over training (DoRA, Figure 2)
    python run.py --mode sweep --ranks 1,2,4,8         # the same LoRA run for several ranks or target sets
    python run.py --mode score --predictions FILE ...  # ROUGE for predictions any tool wrote (CSV or JSONL)
    python run.py --mode check-data --data FILE.csv    # your own dialogues checked before training on them
    python run.py --mode summarise --input FILE|- ...  # summaries of a file's dialogues, or of one from stdin
    torchrun --nproc_per_node N run.py --mode full|lora  # the same training on N processes (GPUs, machines)

This file reads the command line and hands it to the mode's runner (modes/): its `config_from_args` builds the run's
configuration once, complete, and its `run(config)` calls the library, which never sees the command line. The
library raises ValueError / FileNotFoundError naming the problem; here such an error becomes one line on stderr and
exit code 2. Under torchrun only rank 0 prints (every process meets the same bad flag).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

PROMPT_MODES = ("zero-shot", "one-shot", "few-shot")
TRAIN_MODES = ("full", "lora")
MODES = PROMPT_MODES + TRAIN_MODES + ("compare", "analyse", "sweep", "score", "pretrain", "check-data", "summarise")
CPU_KERNELS_DEFAULT = True  # decided by a side-by-side measurement: README, "Speed"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py",
        description="FLAN-T5 dialogue summarisation on DialogSum: prompting, full and LoRA fine-tuning, ROUGE.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--mode", required=True, choices=MODES, help="what to run")

    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="google/flan-t5-base",
                   help="hub id or local folder with config.json, tokenizer files (and weights unless --random-init)")
    g.add_argument("--random-init", action="store_true",
                   help="the model folder's architecture with random weights (smoke runs, benchmarks)")
    g.add_argument("--data", default="knkarthick/dialogsum",
                   help="hub id, a local folder (official dialogsum.*.jsonl, or train/validation/test .jsonl/.csv), "
                        "or one .csv/.jsonl file of your own, split by --validation-size, --test-size, --split-seed")
    g.add_argument("--split", default="test", choices=("train", "validation", "test"), help="split to evaluate on")
    g.add_argument("--max-train-samples", type=int, default=None, help="train on the first N of a fixed shuffle")
    g.add_argument("--max-eval-samples", type=int, default=None, help="evaluate on the first N dialogues")
    g.add_argument("--max-input-tokens", type=int, default=512, help="prompt/input token budget")
    g.add_argument("--max-target-tokens", type=int, default=128, help="summary token budget when training")
    g.add_argument("--seed", type=int, default=42, help="fixes shots, data order, initialisation")

    g = p.add_argument_group("generation and evaluation")
    g.add_argument("--shots", type=int, default=None, help="examples in the prompt (one-shot: 1, few-shot: 3)")
    g.add_argument("--batch-size", type=int, default=8,
                   help="examples per batch (training and generation) over all N processes, batch-size / N each")
    g.add_argument("--max-new-tokens", type=int, default=200, help="generated summary length limit, in tokens")
    g.add_argument("--num-beams", type=int, default=1,
                   help="1: greedy decoding (the course's); N > 1: beam search over the N most likely summaries")
    g.add_argument("--adapter", default=None, metavar="DIR",
                   help="prompting modes: a LoRA adapter trained on --model (a run's adapter/ or peft's), merged "
                        "into the weights before generating; a fully fine-tuned model goes to --model instead")
    g.add_argument("--stemmer", action=argparse.BooleanOptionalAction, default=True,
                   help="Porter stemming inside ROUGE (the course uses it)")
    g.add_argument("--runs", nargs="+", default=None, metavar="DIR", help="compare: run folders already made")

    g = p.add_argument_group("score: ROUGE for a file of predictions any tool wrote")
    g.add_argument("--predictions", default=None, metavar="FILE",
                   help="a .csv (header row) or .jsonl (one object per line) file with predictions and references")
    g.add_argument("--prediction-column", nargs="+", default=None, metavar="NAME",
                   help="column(s) of model summaries; each is scored into its own run folder <output-dir>/NAME")
    g.add_argument("--reference-column", default=None, metavar="NAME", help="the column of human summaries")
    g.add_argument("--group-by", default="row", choices=("row", "dialogue"),
                   help="row: each row against its one reference (the course's way); dialogue: a dialogue's rows "
                        "scored once against all its references, best per ROUGE type")
    g.add_argument("--lsum-sentences", action=argparse.BooleanOptionalAction, default=True,
                   help="score: split summaries into sentences before ROUGE-Lsum (the Hugging Face summarization "
                        "example's way); without, the text as written (as evaluate: Lsum equals ROUGE-L)")

    g = p.add_argument_group("your own dialogues: any .csv or .jsonl file, checked, trained on, summarised")
    g.add_argument("--train-file", default=None, metavar="FILE", help="train dialogues (instead of --data)")
    g.add_argument("--validation-file", default=None, metavar="FILE", help="validation dialogues")
    g.add_argument("--test-file", default=None, metavar="FILE", help="test dialogues")
    g.add_argument("--dialogue-column", default=None, metavar="NAME",
                   help="the column holding each dialogue (your files: default 'dialogue'); score --group-by "
                        "dialogue: the rows of one dialogue share it (default: consecutive rows with the same "
                        "prediction, as in the course's results file)")
    g.add_argument("--summary-column", nargs="+", default=None, metavar="NAME",
                   help="the column(s) of human summaries, several: several references per dialogue (default "
                        "'summary'); summarise: the column the summaries are written to (default 'prediction')")
    g.add_argument("--id-column", default=None, metavar="NAME", help="ids of the rows (default: numbered row-1, ...)")
    g.add_argument("--validation-size", type=float, default=0.1,
                   help="--data FILE: validation dialogues, a fraction (below 1) or a number")
    g.add_argument("--test-size", type=float, default=0.1, help="--data FILE: test dialogues, as --validation-size")
    g.add_argument("--split-seed", type=int, default=42, help="--data FILE: the seed of the split (not --seed's)")
    g.add_argument("--prompt", default=None, metavar="TEMPLATE",
                   help="the prompt, with {dialogue} once, for training, zero-shot, check-data and summarise "
                        "(default: the one saved with --adapter or --model, else the course's); one/few-shot keep "
                        "FLAN's templates")
    g.add_argument("--input", default=None, metavar="FILE|-",
                   help="summarise: a .csv/.jsonl file of dialogues, or - for one dialogue on standard input")
    g.add_argument("--output", default=None, metavar="FILE",
                   help="summarise: the .csv/.jsonl file written, the input's columns and the summaries")
    g.add_argument("--select-by", default="loss", choices=("loss", "rouge1", "rouge2", "rougeL", "rougeLsum"),
                   help="full|lora: keep the weights with the lowest validation loss, or the highest validation "
                        "ROUGE (--max-val-samples dialogues, summarised with the run's generation settings)")
    g.add_argument("--early-stopping-patience", type=int, default=0, metavar="N",
                   help="full|lora: stop after N validations without improvement of --select-by (0: never)")

    g = p.add_argument_group("where and how")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    g.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: bf16 autocast where the device computes bf16 natively (CUDA compute capability 8.0+; "
                        "a CPU with AVX512-BF16 or AMX), else fp32 (model/device.py)")
    g.add_argument("--fsdp", action="store_true",
                   help="under torchrun: shard weights, gradients and optimiser state over the processes (FSDP2)")
    g.add_argument("--cpu-kernels", action=argparse.BooleanOptionalAction, default=CPU_KERNELS_DEFAULT,
                   help="training on CPU: faster dropout, attention and GELU, freed memory kept "
                        "(train_loop/cpu_speed.py); the same formulas, other dropout masks")
    g.add_argument("--output-dir", default=None, help="where results go (default: runs/<mode>)")
    g.add_argument("--overwrite", action="store_true", help="allow writing into a run folder that has results")

    g = p.add_argument_group("training (full and lora)")
    g.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: lora 1e-3; full 1e-4 for small models, 1e-5 for base and up; "
                        "pretrain 1e-2, Adafactor's relative rate)")
    g.add_argument("--epochs", type=float, default=1.0)
    g.add_argument("--max-steps", type=int, default=None, help="stop after N optimiser steps (overrides --epochs)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimiser step")
    g.add_argument("--warmup-steps", type=int, default=0)
    g.add_argument("--lr-schedule", default="linear", choices=("linear", "cosine"))
    g.add_argument("--optimizer", default=None, choices=("adamw", "adafactor"),
                   help="default: adamw for full and lora; adafactor, T5's own, for pretrain (its step is relative "
                        "to each weight's RMS; train_loop/step.py)")
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--adam-beta1", type=float, default=0.9)
    g.add_argument("--adam-beta2", type=float, default=0.999)
    g.add_argument("--adam-eps", type=float, default=1e-8)
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the gradient norm (0: off)")
    g.add_argument("--eval-every", type=int, default=0, help="validation loss every N steps (0: each epoch end)")
    g.add_argument("--max-val-samples", type=int, default=None, help="validation dialogues for the loss")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: at the end only)")
    g.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output-dir")

    from lora.layer import LoRAConfig  # its field defaults are LoRA's only defaults

    lora = LoRAConfig()
    g = p.add_argument_group("LoRA")
    g.add_argument("--lora-r", type=int, default=lora.r)
    g.add_argument("--lora-alpha", type=float, default=lora.alpha)
    g.add_argument("--lora-dropout", type=float, default=lora.dropout)
    g.add_argument("--lora-targets", default=",".join(lora.targets), help="comma-separated Linear names to adapt")
    g.add_argument("--lora-init-seed", type=int, default=None,
                   help="seed of A's random initialisation (default: --seed); --mode sweep gives run k the seed "
                        "--seed + k, so that its adapters start independent, as the LoRA paper's section 7.2 "
                        "compares them")
    g.add_argument("--rslora", action="store_true", help="scale by alpha/sqrt(r) instead of alpha/r")
    g.add_argument("--merge", action="store_true", help="also save the model with the adapter merged in")

    g = p.add_argument_group("LoRA's family (docs/lora-family.md)")
    g.add_argument("--lora-variant", default="lora", choices=("lora", "dora", "pissa"),
                   help="dora: magnitude and direction (Liu et al. 2024); pissa: A and B from W's top-r singular "
                        "triplets, the residual frozen (Meng et al. 2024)")
    g.add_argument("--loraplus-lr-ratio", type=float, default=None, metavar="L",
                   help="LoRA+ (Hayou et al. 2024): B's learning rate L times A's (the paper: 16)")
    g.add_argument("--quantize-base", default=None, choices=("nf4",),
                   help="QLoRA (Dettmers et al. 2023): every frozen Linear but lm_head stored as NF4, blocks of 64")
    g.add_argument("--nf4-double-quant", action="store_true", help="with --quantize-base: absmax in 8 bits too")
    g.add_argument("--variants", default=None, metavar="V1,V2,...",
                   help="sweep: one run per variant of lora,dora,pissa,loraplus,qlora, all else equal")

    g = p.add_argument_group("magnitude and direction (the DoRA paper's section 3; docs/lora-family.md)")
    g.add_argument("--snapshot-every", type=int, default=0, metavar="N",
                   help="full|lora: keep the --lora-targets layers' weights after every N-th step in "
                        "<output-dir>/snapshots/ (lora: A, B and DoRA's m; full: W) for --mode analyse --snapshots")
    g.add_argument("--snapshots", nargs="+", default=None, metavar="DIR",
                   help="analyse: run folders trained with --snapshot-every: Delta M and Delta D of each layer's W "
                        "at each snapshot against --model's (Liu et al. 2024, Figure 2)")

    g = p.add_argument_group("what LoRA learned (analyse) and sweeps")
    g.add_argument("--adapters", nargs="+", default=None, metavar="DIR",
                   help="analyse: adapter or --mode lora run folders: the spectrum of each update scaling*B*A, "
                        "Table 7, the subspace similarity of every pair's A (Hu et al. 2021, section 7)")
    g.add_argument("--full-model", default=None, metavar="DIR",
                   help="analyse: a fully fine-tuned --model (or --mode full run folder): how low-rank W_full - "
                        "W_base is, and how much of it the LoRA updates capture")
    g.add_argument("--ranks", default=None, metavar="R1,R2,...",
                   help="sweep: one LoRA run per rank, all else equal (the paper's Table 6 used 1,2,4,8,64)")
    g.add_argument("--target-sets", default=None, metavar="'T;T,T;...'",
                   help="sweep: one LoRA run per target set, ';' between sets (e.g. 'q;k;v;o;q,k;q,v;q,k,v,o', "
                        "the paper's Table 5), each at the parameter budget of --lora-r on the first set")
    return p


def dispatch(args: argparse.Namespace):
    """Run the mode: its runner, imported only now, builds its configuration from the flags and runs it; returns
    the metrics (a dict), the path of the report it wrote (compare, analyse, sweep) or, for score, its printout."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and args.mode not in TRAIN_MODES:
        raise ValueError(f"--mode {args.mode} runs on one process; only --mode full|lora runs under torchrun "
                         f"with several")
    if args.fsdp and args.mode not in TRAIN_MODES:
        raise ValueError("--fsdp shards training: use it with --mode full|lora")
    if args.mode in TRAIN_MODES:
        from modes.train import config_from_args, run
    elif args.mode in PROMPT_MODES:
        from modes.prompt import config_from_args, run
    elif args.mode == "compare":
        from modes.compare import config_from_args, run
    elif args.mode == "analyse":
        from modes.analyse import config_from_args, run
    elif args.mode == "sweep":
        from modes.sweep import config_from_args, run
    elif args.mode == "score":
        from modes.score import config_from_args, run
    elif args.mode == "check-data":
        from modes.check_data import config_from_args, run
    elif args.mode == "summarise":
        from modes.summarise import config_from_args, run
    else:
        from modes.pretrain import config_from_args, run
    return run(config_from_args(args))


def summary(result) -> str:
    """The closing line: the scores, and where to find everything."""
    if isinstance(result, dict) and "printout" in result:  # --mode score: its tables
        return result["printout"]
    if isinstance(result, dict) and "rouge1" in result:
        scores = "  ".join(f"{k} {result[k]:.4f}" for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))
        stem = "stemmer on" if result.get("use_stemmer") else "stemmer off"
        length = f", {result['gen_len']} tokens per summary" if "gen_len" in result else ""
        return (f"{result.get('mode')} on {result.get('examples')} dialogues: {scores} ({stem}{length}); "
                f"results in {result.get('output_dir')}/ (metrics.json, predictions.csv, side_by_side.md)")
    return f"report: {result}" if result is not None else ""


def show_project_logs() -> None:
    """The project's `logging` lines, plain, on this call's stderr (replacing an earlier call's handler)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for package in ("lora", "model", "prompting", "train_loop", "pretrain", "eval", "modes"):
        logger = logging.getLogger(package)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)


def use_local_cache_if_offline(args: argparse.Namespace) -> None:
    """Hub ids and no network: the libraries answer from their cache at once instead of retrying for a minute
    (set before transformers/datasets are imported: they read these variables once)."""
    from model.load import is_local

    own_files = args.train_file or args.validation_file or args.test_file or args.data.endswith((".csv", ".jsonl"))
    data = [] if own_files or args.mode == "summarise" else [args.data]
    names = [args.model, *data] if args.mode != "score" and (args.mode != "compare" or not args.runs) else []
    if any(not is_local(n) for n in names):
        from model.hub import hub_is_reachable

        if not hub_is_reachable():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@contextlib.contextmanager
def no_empty_folder_left(folder: Path):
    """A run that fails leaves no empty run folder behind: the folders it created (`folder` and missing parents) are
    removed again if still empty (`os.rmdir` removes only empty ones); a folder that existed before is never touched."""
    created = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        yield
    except BaseException:
        if created and os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 owns the folder
            for path, _, _ in os.walk(created[-1], topdown=False):  # children before their parents
                with contextlib.suppress(OSError):  # not empty: this run wrote something there, keep it
                    os.rmdir(path)
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show_project_logs()

    def fail(message: str, code: int) -> int:
        if os.environ.get("RANK", "0") == "0":  # torchrun's rank 0, or the only process
            print(f"run.py: {message}", file=sys.stderr)
        return code

    try:
        use_local_cache_if_offline(args)
        with no_empty_folder_left(Path(args.output_dir or Path("runs") / args.mode)):
            line = summary(dispatch(args))
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        return fail(f"error: {err}", 2)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except RuntimeError as err:
        from train_loop.distributed import PeerLost

        if not isinstance(err, PeerLost):
            raise
        return fail(f"error: {err}", 1)
    if line and os.environ.get("RANK", "0") == "0":
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

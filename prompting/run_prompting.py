"""`python run.py --mode zero-shot|one-shot|few-shot`: summaries from the unchanged model, then ROUGE.

The steps, in the order a reader would do them by hand:
1. check the numbers on the command line, so a typo fails in a second rather than after loading a model;
2. load the dialogues to summarise (and, for one/few-shot, the train split the shots come from);
3. build prompts that fit the token budget (prompting/prompts.py), load the model, generate (prompting/generate.py);
4. write predictions.csv, side_by_side.md and metrics.json through eval/results.py.
"""
from __future__ import annotations

import logging
import resource
import time
from pathlib import Path

import torch

from eval.results import finish_run, prepare_output_dir
from prompting.dialogsum import load_split
from prompting.generate import generate, mean_length
from prompting.model import (build_random_init, check_model_folder, count_parameters, load_pretrained,
                             load_tokenizer, resolve_device)
from prompting.prompts import build_prompts
from train_loop.machine import describe_machine
from train_loop.precision import choose_precision

log = logging.getLogger(__name__)

DEFAULT_SHOTS = {"zero-shot": 0, "one-shot": 1, "few-shot": 3}
HUB_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "spiece.model"]


def run(args) -> dict:
    shots = check_args(args)
    examples = load_split(args.data, args.split, args.max_eval_samples, args.seed)
    train = load_split(args.data, "train", args.max_train_samples, args.seed) if shots else None
    if shots and args.split == "train":
        raise ValueError(f"--mode {args.mode} draws its shots from train, so it cannot evaluate --split train; "
                         "use --split validation or test")
    if shots and shots > len(train):
        raise ValueError(f"--shots {shots}: only {len(train)} train dialogues are available to draw shots from")
    device = resolve_device(args.device)
    precision, precision_reason = choose_precision(args.precision, device)
    out = prepare_output_dir(args.output_dir or Path("runs") / args.mode, overwrite=args.overwrite)

    model, tokenizer = load_model_and_tokenizer(args.model, args.random_init, args.seed)
    adapter_info = {}
    if getattr(args, "adapter", None):  # a LoRA adapter trained on --model, merged in (prompting/adapter.py)
        from prompting.adapter import apply_adapter

        adapter_info = apply_adapter(model, args.adapter, base_model=args.model)
    model.to(device)
    log.info("%s with %s on %s, %s; %s; writing to %s", args.mode, args.model, device, describe_machine(device),
             precision_reason, out)
    prompt_set = build_prompts(examples, tokenizer, shots=shots, train=train, seed=args.seed,
                               max_tokens=args.max_input_tokens)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    num_beams = getattr(args, "num_beams", 1)
    generated = generate(model, tokenizer, prompt_set.prompts, batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens, device=device, max_input_tokens=args.max_input_tokens,
                         precision=precision, num_beams=num_beams)
    seconds = time.perf_counter() - start

    info = {
        "model": str(args.model), "mode": args.mode, "random_init": bool(args.random_init), "data": str(args.data),
        "split": args.split, "seed": args.seed, "device": str(device), "machine": describe_machine(device),
        "precision": precision, "precision_reason": precision_reason, "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "max_input_tokens": args.max_input_tokens, "num_beams": num_beams,
        "gen_len": mean_length(generated.lengths), **adapter_info,
        "trainable_params": 0, "total_params": count_parameters(model)[1], "train_seconds": 0.0,
        "generation_seconds": round(seconds, 2), "peak_memory_mb": peak_memory_mb(device), "artifact_bytes": 0,
        "prompt_stats": prompt_set.stats.as_dict(),
    }
    return finish_run(out, examples, prompt_set.prompts, generated.texts, info, use_stemmer=args.stemmer)


def check_args(args) -> int:
    """Impossible numbers fail here; returns the number of shots for the mode."""
    for flag in ("batch_size", "max_new_tokens", "max_eval_samples", "max_train_samples", "max_input_tokens",
                 "num_beams"):
        value = getattr(args, flag, None)
        if value is not None and value <= 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive number, got {value}")
    if getattr(args, "adapter", None):
        from prompting.adapter import check_adapter_folder

        check_adapter_folder(args.adapter)
    shots = DEFAULT_SHOTS[args.mode] if args.shots is None else args.shots
    if args.mode == "zero-shot" and shots != 0:
        raise ValueError(f"--shots {shots} does not go with --mode zero-shot; use --mode one-shot or few-shot")
    if args.mode == "one-shot" and shots != 1:
        raise ValueError(f"--mode one-shot uses exactly one shot, got --shots {shots}; use --mode few-shot")
    if args.mode == "few-shot" and shots < 2:
        raise ValueError(f"--mode few-shot needs --shots 2 or more, got {shots}")
    return shots


def load_model_and_tokenizer(name: str, random_init: bool, seed: int):
    """The model and its tokenizer from a local folder or a hub id; offline hub errors become a clear ValueError."""
    try:
        if Path(name).exists() or name.startswith((".", "/", "~")):
            folder = check_model_folder(name, need_weights=not random_init)
        elif random_init:  # the config and tokenizer alone, without the weights
            from huggingface_hub import snapshot_download

            folder = snapshot_download(name, allow_patterns=HUB_FILES)
        else:
            folder = name
        tokenizer = load_tokenizer(folder)
        model = build_random_init(folder, seed=seed) if random_init else load_pretrained(folder)
    except FileNotFoundError as err:
        if Path(name).exists() or name.startswith((".", "/", "~")):
            raise
        raise hub_error(name) from err
    except (OSError, ValueError) as err:
        if Path(name).exists():  # a local folder with a broken file (config.json that is not JSON, say)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(f"model folder {name} cannot be loaded: {first}") from err
        if isinstance(err, ValueError):
            raise
        raise hub_error(name) from err  # transformers: "We couldn't connect to 'https://huggingface.co' ..."
    if random_init:
        log.warning("--random-init: %s has random weights; its summaries are meaningless (fine for smoke runs "
                    "and speed measurements)", name)
    return model, tokenizer


def hub_error(name: str) -> ValueError:
    return ValueError(f"cannot reach the Hugging Face hub for {name!r} (this machine is offline?); "
                      "pass a local folder with --model")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory while generating: the CUDA allocator's peak, or on CPU the process's peak resident set."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB

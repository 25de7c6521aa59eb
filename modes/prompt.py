"""`python run.py --mode zero-shot|one-shot|few-shot`: summaries from the unchanged model, then ROUGE.

The steps, in the order a reader would do them by hand:
1. check the command line (modes/config.py), so a typo fails in a second rather than after loading a model;
2. load the dialogues to summarise (and, for one/few-shot, the train split the shots come from);
3. build prompts that fit the token budget (prompting/prompts.py), load the model, generate (prompting/model.py);
4. write predictions.csv, side_by_side.md and metrics.json through eval/evaluate.py.
"""
from __future__ import annotations

import logging
import time

import torch

from eval.evaluate import finish_run
from modes.config import data_config, generation_config, output_config, prepare_output_dir
from prompting.dialogsum import load_split
from prompting.adapter import apply_adapter, check_adapter_folder
from prompting.model import count_parameters, generate, load_model_and_tokenizer, mean_length, resolve_device
from prompting.prompts import build_prompts
from train_loop.loop import peak_memory_mb
from train_loop.precision import choose_precision, describe_machine

log = logging.getLogger(__name__)

DEFAULT_SHOTS = {"zero-shot": 0, "one-shot": 1, "few-shot": 3}


def shots_for(mode: str, shots: int | None) -> int:
    """The number of shots for the mode (--shots, or the mode's own); impossible pairs raise."""
    shots = DEFAULT_SHOTS[mode] if shots is None else shots
    if mode == "zero-shot" and shots != 0:
        raise ValueError(f"--shots {shots} does not go with --mode zero-shot; use --mode one-shot or few-shot")
    if mode == "one-shot" and shots != 1:
        raise ValueError(f"--mode one-shot uses exactly one shot, got --shots {shots}; use --mode few-shot")
    if mode == "few-shot" and shots < 2:
        raise ValueError(f"--mode few-shot needs --shots 2 or more, got {shots}")
    return shots


def run(args) -> dict:
    data, gen, output = data_config(args), generation_config(args), output_config(args)
    shots = shots_for(args.mode, args.shots)
    if getattr(args, "adapter", None):  # before anything slow: the folder must be an adapter's
        check_adapter_folder(args.adapter)
    examples = load_split(data.source, data.split, data.max_eval_samples, data.seed)
    train = load_split(data.source, "train", data.max_train_samples, data.seed) if shots else None
    if shots and data.split == "train":
        raise ValueError(f"--mode {args.mode} draws its shots from train, so it cannot evaluate --split train; "
                         "use --split validation or test")
    if shots and shots > len(train):
        raise ValueError(f"--shots {shots}: only {len(train)} train dialogues are available to draw shots from")
    device = resolve_device(args.device)
    precision, precision_reason = choose_precision(args.precision, device)
    out = prepare_output_dir(output.folder, overwrite=output.overwrite)

    model, tokenizer = load_model_and_tokenizer(args.model, args.random_init, data.seed)
    # A LoRA adapter trained on --model, merged into the weights (prompting/adapter.py)
    adapter_info = apply_adapter(model, args.adapter, base_model=args.model) if getattr(args, "adapter", None) else {}
    model.to(device)
    log.info("%s with %s on %s, %s; %s; writing to %s", args.mode, args.model, device, describe_machine(device),
             precision_reason, out)
    prompt_set = build_prompts(examples, tokenizer, shots=shots, train=train, seed=data.seed,
                               max_tokens=data.max_input_tokens)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    generated = generate(model, tokenizer, prompt_set.prompts, batch_size=gen.batch_size,
                         max_new_tokens=gen.max_new_tokens, device=device, max_input_tokens=data.max_input_tokens,
                         precision=precision, num_beams=gen.num_beams)
    seconds = time.perf_counter() - start

    info = {
        "model": str(args.model), "mode": args.mode, "random_init": bool(args.random_init), "data": str(data.source),
        "split": data.split, "seed": data.seed, "device": str(device), "machine": describe_machine(device),
        "precision": precision, "precision_reason": precision_reason, "batch_size": gen.batch_size,
        "max_new_tokens": gen.max_new_tokens, "max_input_tokens": data.max_input_tokens,
        "num_beams": gen.num_beams, "gen_len": mean_length(generated.lengths), **adapter_info,
        "trainable_params": 0, "total_params": count_parameters(model)[1], "train_seconds": 0.0,
        "generation_seconds": round(seconds, 2), "peak_memory_mb": round(peak_memory_mb(device), 1),
        "artifact_bytes": 0, "prompt_stats": prompt_set.stats.as_dict(),
    }
    return finish_run(out, examples, prompt_set.prompts, generated.texts, info, use_stemmer=gen.use_stemmer)

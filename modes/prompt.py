"""`python run.py --mode zero-shot|one-shot|few-shot`: summaries from the unchanged model, then ROUGE.

The steps, in the order a reader would do them by hand:
1. read the command line into a `PromptRun` (`config_from_args`), so a typo fails in a second rather than after
   loading a model;
2. load the dialogues to summarise (and, for one/few-shot, the train split the shots come from);
3. build prompts that fit the token budget (prompting/prompts.py: zero-shot in --prompt's template, else the one
   saved with --adapter or --model, else the course's), load the model, generate (model/generate.py);
4. write predictions.csv, side_by_side.md and metrics.json through eval/evaluate.py.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from eval.evaluate import as_record, finish_run, prepare_output_dir
from model.device import choose_precision, describe_machine, peak_memory_mb, resolve_device
from model.generate import GenerationConfig, generate, mean_length
from model.load import count_parameters, is_local, load_model_and_tokenizer
from modes.train_config import data_config
from prompting.adapter import apply_adapter, check_adapter_folder
from prompting.dialogsum import DataConfig, load_data
from prompting.prompts import COURSE_TEMPLATE, build_prompts, choose_template

log = logging.getLogger(__name__)

DEFAULT_SHOTS = {"zero-shot": 0, "one-shot": 1, "few-shot": 3}


@dataclass(frozen=True)
class PromptRun:
    """Everything a prompting run is told; metrics.json records all of it."""
    mode: str                        # zero-shot | one-shot | few-shot
    model: str
    random_init: bool
    seed: int
    shots: int
    adapter: str | None              # --adapter: a LoRA adapter merged into --model before generating
    prompt: str | None               # zero-shot's template ({dialogue} in it); None: FLAN's few-shot template
    prompt_from: str                 # --prompt, the prompt.json it was read from, or the course's
    data: DataConfig
    batch_size: int
    generation: GenerationConfig
    use_stemmer: bool
    output_dir: Path
    overwrite: bool
    device: str
    precision: str                   # resolved for the device
    precision_reason: str


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


def config_from_args(args, mode: str | None = None, output_dir: Path | None = None) -> PromptRun:
    """The run the flags describe (`mode` and `output_dir` given: the prompting step of --mode compare, with the
    mode's own number of shots)."""
    mode = mode or args.mode
    data = data_config(args)  # as modes/train_config.py's
    shots = shots_for(mode, args.shots if mode == args.mode else None)
    if shots and data.split == "train":
        raise ValueError(f"--mode {mode} draws its shots from train, so it cannot evaluate --split train; "
                         "use --split validation or test")
    if args.adapter:  # before anything slow: the folder must be an adapter's
        check_adapter_folder(args.adapter)
    data.check_files((data.split, "train") if shots else (data.split,))
    if shots and args.prompt is not None and mode == args.mode:  # --mode compare: its one/few-shot keep FLAN's
        raise ValueError(f"--prompt replaces the zero-shot template; --mode {mode} keeps FLAN's few-shot template")
    prompt, prompt_from = (None, "FLAN's few-shot template") if shots else choose_template(
        args.prompt, args.adapter, args.model if is_local(args.model) else None)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be at least 1")
    generation = GenerationConfig(args.max_new_tokens, args.num_beams)
    device = resolve_device(args.device)
    precision, precision_reason = choose_precision(args.precision, device)
    return PromptRun(mode, args.model, args.random_init, args.seed, shots, args.adapter, prompt, prompt_from, data,
                     args.batch_size,
                     generation, args.stemmer, Path(output_dir or args.output_dir or Path("runs") / mode),
                     args.overwrite, device.type, precision, precision_reason)


def run(config: PromptRun) -> dict:
    data, device = config.data, torch.device(config.device)
    examples = load_data(data, data.split, data.max_eval_samples)
    train = load_data(data, "train", data.max_train_samples) if config.shots else None
    if config.shots and config.shots > len(train):
        raise ValueError(f"--shots {config.shots}: only {len(train)} train dialogues are available to draw shots from")
    out = prepare_output_dir(config.output_dir, overwrite=config.overwrite)

    model, tokenizer = load_model_and_tokenizer(config.model, config.random_init, config.seed)
    # A LoRA adapter trained on --model, merged into the weights (prompting/adapter.py)
    adapter_info = apply_adapter(model, config.adapter, base_model=config.model) if config.adapter else {}
    model.to(device)
    log.info("%s with %s on %s, %s; %s; writing to %s", config.mode, config.model, device,
             describe_machine(device), config.precision_reason, out)
    prompt_set = build_prompts(examples, tokenizer, shots=config.shots, train=train, seed=data.seed,
                               max_tokens=data.max_input_tokens, template=config.prompt or COURSE_TEMPLATE)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    generated = generate(model, tokenizer, prompt_set.prompts, config.generation, config.batch_size, device,
                         data.max_input_tokens, config.precision)
    seconds = time.perf_counter() - start
    results = {"machine": describe_machine(device), "gen_len": mean_length(generated.lengths), **adapter_info,
               "trainable_params": 0, "total_params": count_parameters(model)[1], "train_seconds": 0.0,
               "generation_seconds": round(seconds, 2), "peak_memory_mb": round(peak_memory_mb(device), 1),
               "artifact_bytes": 0, "prompt_stats": prompt_set.stats.as_dict()}
    if data.own_files:
        from prompting.own_data import split_record

        results["data_split"] = split_record(data)
    return finish_run(out, examples, prompt_set.prompts, generated.texts, {**as_record(config), **results},
                      use_stemmer=config.use_stemmer)

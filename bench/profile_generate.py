"""Where summarising time goes: ours (model/generate.py), transformers' pipeline and the seeds' loop, measured.

    python bench/profile_generate.py --model path/to/flan-t5-small --examples 64 --loop-examples 8

Same work as bench/bench_generate.py (zero-shot prompts of the first `--examples` DialogSum test dialogues,
random weights, in `--precision` (auto: bf16 only where the CPU computes it natively), exactly `--new-tokens` greedy tokens each, one torch thread; the loop on `--loop-examples`
of them spread over their lengths). Two views:

1. Wall-clock time inside the encoder, the decoder stack and the LM head (forward hooks), per dialogue and per
   decoding step (one step = every row of a batch gets one token); the rest is `generate`'s own loop,
   tokenizing and decoding. Padding shows up in the encoder: the pipeline batches prompts in the given order.
2. torch.profiler's operators for ours, grouped by input shape, by self CPU time.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from bench import generate_sides as sides  # noqa: E402
from prompting.dialogsum import load_split  # noqa: E402
from model.load import build_random_init, load_tokenizer  # noqa: E402
from prompting.prompts import zero_shot_prompt  # noqa: E402
from model.device import autocast, choose_precision, describe_machine  # noqa: E402

PARTS = ("encoder", "decoder", "lm_head")


class PartClock:
    """Wall-clock seconds and calls inside `model.encoder`, `model.decoder`, `model.lm_head` (forward hooks)."""

    def __init__(self, model):
        self.seconds, self.calls, self._start = dict.fromkeys(PARTS, 0.0), dict.fromkeys(PARTS, 0), {}
        for name in PARTS:
            module = getattr(model, name)
            module.register_forward_pre_hook(lambda m, a, name=name: self._start.__setitem__(name, time.perf_counter()))
            module.register_forward_hook(lambda m, a, o, name=name: self._stop(name))

    def _stop(self, name):
        self.seconds[name] += time.perf_counter() - self._start[name]
        self.calls[name] += 1

    def reset(self):
        self.seconds, self.calls = dict.fromkeys(PARTS, 0.0), dict.fromkeys(PARTS, 0)


def breakdown(label, clock, total, dialogues, padding):
    steps = clock.calls["lm_head"]
    parts = {**clock.seconds, "rest": total - sum(clock.seconds.values())}
    print(f"{label}: {dialogues} dialogues in {total:.2f} s = {1000 * total / dialogues:.0f} ms per dialogue; "
          f"{steps} decoding steps of {1000 * (parts['decoder'] + parts['lm_head']) / steps:.1f} ms "
          f"(decoder + LM head), {padding:.1%} of the input positions padding")
    for name, seconds in parts.items():
        print(f"    {name:<8}{seconds:>8.2f} s {100 * seconds / total:>5.1f}%  {1000 * seconds / dialogues:>6.0f} ms "
              f"per dialogue")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "flan-t5-small"))
    parser.add_argument("--data", default=str(REPO / "data" / "dialogsum"))
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--loop-examples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=12, help="operator rows to print")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="every side alike")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precision, reason = choose_precision(args.precision, torch.device("cpu"))
    print(f"machine: {describe_machine('cpu')}\nprecision: every side {reason}")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"

    tokenizer, model = load_tokenizer(args.model), build_random_init(args.model).eval()
    prompts = [zero_shot_prompt(e.dialogue) for e in load_split(args.data, "test", max_samples=args.examples)]
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=True, max_length=512).input_ids]
    by_length = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    spread = [by_length[round(i * (len(prompts) - 1) / max(args.loop_examples - 1, 1))]
              for i in range(args.loop_examples)]
    b, n = args.batch_size, args.new_tokens
    print(f"{len(prompts)} prompts, mean {sum(lengths) / len(prompts):.1f} tokens (loop: "
          f"{sum(lengths[i] for i in spread) / len(spread):.1f}), batch {b}, {n} new tokens, "
          f"{torch.get_num_threads()} thread(s)")

    clock = PartClock(model)
    pipe = sides.make_pipeline(model, load_tokenizer(args.model), b)
    runs = {"ours": (lambda: sides.ours(model, tokenizer, prompts, b, n, precision=precision), len(prompts)),
            "pipeline": (lambda: sides.pipeline_side(pipe, prompts, n), len(prompts)),
            "seeds' loop": (lambda: sides.seeds_loop(model, tokenizer, [prompts[i] for i in spread], n), len(spread))}
    sides.ours(model, tokenizer, prompts[:b], b, n, precision=precision)  # warm-up
    for label, (run, count) in runs.items():
        clock.reset()
        with sides.GenerateCounter(model) as counter:
            start = time.perf_counter()
            with autocast(precision, torch.device("cpu")):  # ours sets its own; the others run under this one
                run()
            seconds = time.perf_counter() - start
        breakdown(label, clock, seconds, count, counter.padding_fraction())

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        sides.ours(model, tokenizer, prompts, b, n, precision=precision)
    print(f"\nours under torch.profiler, top {args.rows} operators by self CPU time (grouped by input shapes):")
    table = prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=36, max_shapes_column_width=60)
    print(table)


if __name__ == "__main__":
    main()

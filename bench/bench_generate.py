"""Summarising throughput: ours (model/generate.py) against transformers' pipeline and the seeds' loop.

    python bench/bench_generate.py --model path/to/flan-t5-small --data path/to/dialogsum \
        --examples 500 --batch-size 8 --new-tokens 32 --loop-examples 48

(The defaults, 96 dialogues and 16 for the loop, take about 4 minutes on 2 busy CPU cores; the line above, 15.)
The work: the zero-shot prompts of the first `--examples` DialogSum test dialogues, cut to 512 tokens, greedy,
in `--precision` (auto: bf16 autocast only where the device computes bf16 natively, model/device.py; the
same for every side), the architecture of `--model` with random weights (throughput does not depend on them). Random weights
rarely write </s>, and a summary's length must not differ between sides, so every side generates exactly
`--new-tokens` tokens per dialogue (min_new_tokens == max_new_tokens); a counter on `model.generate` checks it.

Sides (bench/generate_sides.py): ours; transformers' text-generation pipeline, same batch size; the seeds' loop,
one dialogue at a time, on `--loop-examples` dialogues spread evenly over the set sorted by length, so their
lengths are the set's (compared per dialogue); ours with LoRA (r=32, alpha=32 on q and v, B random so the update
is not zero) unmerged and merged. Ours runs its precision through `generate(precision=...)`, the
others under the same `torch.autocast`.

Noise: the machine is shared, so the prompts are cut into chunks of `--chunk` prompts and each side runs chunk 1,
then each side chunk 2, and so on, `--repeats` times: a slow minute hits every side alike. Each side's chunks
hold the same batches as one call on all prompts would (ours: chunks of the length-sorted order; the pipeline:
chunks of the given order, a multiple of the batch size); the order of the sides rotates from chunk to chunk.
Each side is warmed up once first. Figures: the median over repeats of each side's total time; sides that run
ours' very batches (LoRA) are also compared chunk by chunk.

Threads: on 2 CPU cores shared with other jobs, two torch threads are a trap: when another process holds a
core, every parallel op waits for the descheduled thread. Measured here, one flan-t5-small `generate` of a
360-token prompt took 0.37 s with one thread and 0.9 to 8.4 s with two while another job ran. So the default is
`--threads 1` (and tokenizers without threads), the same for every side.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import transformers  # noqa: E402

from bench import generate_sides as sides  # noqa: E402
from lora.layer import LoRAConfig, add_lora, lora_layers  # noqa: E402
from lora.merge import merge_lora  # noqa: E402
from prompting.dialogsum import load_split  # noqa: E402
from model.load import build_random_init, load_tokenizer  # noqa: E402
from prompting.prompts import zero_shot_prompt  # noqa: E402
from model.device import autocast, choose_precision, describe_machine  # noqa: E402

LOOP = "seeds' loop"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "flan-t5-small"))
    parser.add_argument("--data", default=str(REPO / "data" / "dialogsum"))
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--loop-examples", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=32, help="prompts per interleaved chunk (multiple of batch)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (CPU); 1 by default, see the docstring")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="every side alike; auto: bf16 only where the device computes it natively")
    return parser.parse_args()


def machine() -> str:
    gpu = f"; {describe_machine('cuda')}" if torch.cuda.is_available() else ""
    return (f"{os.cpu_count()} CPU cores, {describe_machine('cpu')}{gpu}; transformers {transformers.__version__}, "
            f"python {platform.python_version()}, " + "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def lora_models(model, seed=0):
    """(unmerged, merged) copies of `model` with LoRA r=32, alpha=32 on q, v and a non-zero B."""
    unmerged = copy.deepcopy(model)
    add_lora(unmerged, LoRAConfig(("q", "v"), r=32, alpha=32, dropout=0.0))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(unmerged):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator) * 0.02)
    merged = copy.deepcopy(unmerged)
    merge_lora(merged)
    return unmerged, merged


def main() -> None:
    args = parse_args()
    if args.chunk % args.batch_size:
        raise SystemExit(f"--chunk {args.chunk} must be a multiple of --batch-size {args.batch_size}")
    device = torch.device(args.device)
    precision, reason = choose_precision(args.precision, device)
    torch.set_num_threads(args.threads)
    if args.threads == 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    examples = load_split(args.data, "test", max_samples=args.examples)
    prompts = [zero_shot_prompt(e.dialogue) for e in examples]
    tokenizer, pipe_tokenizer = load_tokenizer(args.model), load_tokenizer(args.model)  # the pipeline pads left
    model = build_random_init(args.model).to(device).eval()
    unmerged, merged = lora_models(model)
    pipe = sides.make_pipeline(model, pipe_tokenizer, args.batch_size)

    lengths = [len(ids) for ids in tokenizer(prompts, truncation=True, max_length=512).input_ids]
    by_length = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    spread = [round(i * (len(prompts) - 1) / max(args.loop_examples - 1, 1)) for i in range(args.loop_examples)]
    loop_ids = sorted(by_length[i] for i in spread)
    n, k = args.new_tokens, args.chunk

    def ours_on(m):
        return lambda ids: sides.ours(m, tokenizer, [prompts[i] for i in ids], args.batch_size, n, precision=precision)

    def in_precision(summarise):  # the other stacks, under the autocast ours uses
        def run(ids):
            with autocast(precision, device):
                return summarise(ids)
        return run

    # name -> (model, the prompt indices in the order the side gets them, summarise(indices) -> texts)
    side_list = {
        "ours": (model, by_length, ours_on(model)),
        "pipeline": (model, list(range(len(prompts))),
                     in_precision(lambda ids: sides.pipeline_side(pipe, [prompts[i] for i in ids], n))),
        LOOP: (model, loop_ids,
               in_precision(lambda ids: sides.seeds_loop(model, tokenizer, [prompts[i] for i in ids], n))),
        "ours + LoRA unmerged": (unmerged, by_length, ours_on(unmerged)),
        "ours + LoRA merged": (merged, by_length, ours_on(merged)),
    }
    n_chunks = -(-len(prompts) // k)

    def chunk(order, c):  # the loop's few prompts are spread over the same number of chunks
        per = -(-len(order) // n_chunks) if len(order) < len(prompts) else k
        return order[c * per:(c + 1) * per]

    print(f"machine: {machine()}")
    print(f"precision: every side {precision} ({reason})")
    print(f"work: {len(prompts)} DialogSum test dialogues (zero-shot prompt, mean {statistics.mean(lengths):.1f} "
          f"tokens, cut to 512), {Path(args.model).name} random weights on {device}, batch {args.batch_size}, "
          f"greedy, exactly {n} new tokens each; seeds' loop on {len(loop_ids)} of them spread evenly "
          f"(mean {statistics.mean(lengths[i] for i in loop_ids):.1f} tokens), compared per dialogue")
    for name, (m, order, run) in side_list.items():  # warm-up: one batch each
        run(order[:args.batch_size])
    runs = [interleaved(side_list, n_chunks, chunk, device) for _ in range(args.repeats)]
    report(args, runs, n)


def interleaved(side_list, n_chunks, chunk, device):
    """Chunk by chunk, every side in turn (the order rotating each chunk): seconds per chunk, texts, counters."""
    seconds = {name: [] for name in side_list}
    texts = {name: {} for name in side_list}
    counters = {name: sides.GenerateCounter(m) for name, (m, _, _) in side_list.items()}
    names = list(side_list)
    for c in range(n_chunks):
        for name in names[c % len(names):] + names[:c % len(names)]:
            _, order, run = side_list[name]
            ids = chunk(order, c)
            with counters[name]:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                out = run(ids) if ids else []
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds[name].append(time.perf_counter() - start)
            texts[name].update(zip(ids, out))
    return seconds, texts, counters


def report(args, runs, n):
    """Rates from each side's total time (median over repeats). Sides on ours' prompts and batches (LoRA)
    are also compared chunk by chunk, run back to back: the median of those paired ratios shrugs off a slow chunk."""
    _, texts, counters = runs[-1]
    totals = {name: [sum(seconds[name]) for seconds, _, _ in runs] for name in texts}
    rate = {}
    print(f"\n{'side':<22}{'dialogues':>10}{'seconds':>9}{'dialogues/s':>13}{'new tokens/s':>14}{'input padding':>15}")
    for name in texts:
        count, s = len(texts[name]), statistics.median(totals[name])
        rate[name] = count / s
        if counters[name].new_tokens != count * n:
            raise SystemExit(f"{name}: generated {counters[name].new_tokens} tokens, expected {count} x {n}")
        print(f"{name:<22}{count:>10}{s:>9.2f}{rate[name]:>13.2f}{counters[name].new_tokens / s:>14.1f}"
              f"{counters[name].padding_fraction():>14.1%}")
    print(f"(median of {args.repeats} repeat(s); every side generated exactly {n} tokens per dialogue)")

    def same(a, b):
        shared = texts[b].keys() & texts[a].keys()
        return f"{sum(texts[a][i] == texts[b][i] for i in shared)}/{len(shared)}"

    def paired(name):  # median over chunks of (ours' time / this side's time) on the same prompts
        return statistics.median(o / t for seconds, _, _ in runs for o, t in zip(seconds["ours"], seconds[name]))

    base = rate["ours"]
    lines = [("ours / pipeline", base / rate["pipeline"], 1.5, same("ours", "pipeline")),
             ("ours / seeds' loop, per dialogue", base / rate[LOOP], 5.0, same("ours", LOOP)),
             ("LoRA unmerged / base", paired("ours + LoRA unmerged"), None, None),
             ("LoRA merged / base", paired("ours + LoRA merged"), 0.95,
              same("ours + LoRA merged", "ours + LoRA unmerged") + " merged vs unmerged")]
    print("\nratios of speed (LoRA: median over chunks of paired times)")
    for label, ratio, goal, identical in lines:
        verdict = "" if goal is None else f"  goal >= {goal:g}x: {'met' if ratio >= goal else 'NOT met'}"
        print(f"{label:<34}{ratio:>6.2f}x{verdict}" + (f"; identical texts {identical}" if identical else ""))

if __name__ == "__main__":
    main()

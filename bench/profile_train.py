"""Where a training step's time goes: torch.profiler over a few steps of our loop, full or LoRA.

    python bench/profile_train.py --mode full --steps 3 --variant ours

Same work as bench/bench_train.py (a seeded shuffle of DialogSum train, zero-shot prompt -> first summary,
flan-t5-small architecture with random weights, length-grouped batches), one torch thread by default. After two
warm-up steps, times `--steps` steps without the profiler (seconds per step, real tokens/s), then profiles the same
steps again and prints the operators by self CPU time and the shares of matrix products, casts and copies,
dropout masks and the optimiser.

`--variant` picks how dropout and attention run: `sdpa` (transformers' default: SDPA attention, `nn.Dropout`),
`eager` (transformers' eager attention, `nn.Dropout`) or `ours` (train_loop/cpu_speed.py: what run.py --cpu-kernels
uses on CPU).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from dataclasses import replace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from bench.train_sides import run_py_settings, work_examples  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "flan-t5-small"))
    p.add_argument("--data", default=str(REPO / "data" / "dialogsum"))
    p.add_argument("--mode", choices=("full", "lora"), default="full")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 only where the CPU computes it natively (model/device.py)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed, then profiled, steps (after 2 warm-up steps)")
    p.add_argument("--variant", choices=("sdpa", "eager", "ours"), default="ours", help="attention and dropout")
    p.add_argument("--keep-freed-memory", choices=("on", "off"), default="on", help="train_loop/cpu_speed.keep_freed_memory")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=30, help="operators to list (0: time only, no profile)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory == "on":
        from train_loop.cpu_speed import keep_freed_memory

        keep_freed_memory()

    from model.load import build_random_init, load_tokenizer
    from train_loop import loop
    from train_loop.data import batches_by_epoch
    from model.device import choose_precision, describe_machine
    from train_loop.step import label_tokens

    precision, reason = choose_precision(args.precision, torch.device("cpu"))
    print(f"machine: {describe_machine('cpu')}\nprecision: {reason}")
    lora, settings = run_py_settings(args.mode, args.model)
    model = build_random_init(args.model, seed=args.seed)
    torch.manual_seed(args.seed)
    if args.mode == "lora":
        from lora.layer import add_lora

        add_lora(model, replace(lora, init_seed=args.seed))  # A drawn as run.py --seed <seed> draws it
    if args.variant == "ours":
        from train_loop.cpu_speed import use_cpu_kernels

        use_cpu_kernels(model, torch.device("cpu"))
    else:
        model.set_attn_implementation(args.variant)
    examples = work_examples(args.data, (args.steps + 2) * args.batch_size, args.seed)
    batches = batches_by_epoch(examples, load_tokenizer(args.model), args.batch_size, args.seed)(0)
    config = replace(settings, max_steps=2, precision=precision, progress_bar=False)
    cpu = torch.device("cpu")
    loop.train(model, lambda epoch: batches[:2], config, cpu)  # warm-up: allocator, oneDNN kernels
    config = replace(config, max_steps=args.steps)
    timed = batches[2:2 + args.steps]
    tokens = sum(int(b["attention_mask"].sum()) + label_tokens(b) for b in timed)
    faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    loop.train(model, lambda epoch: timed, config, cpu)
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(f"{args.mode}, {args.variant}, {precision}: {args.steps} steps (batches {[tuple(b['input_ids'].shape) for b in timed]})"
          f" in {seconds:.2f} s = {seconds / args.steps:.2f} s per step, {tokens / seconds:.0f} real tokens/s, "
          f"{faults / args.steps:,.0f} minor page faults per step (keep-freed-memory {args.keep_freed_memory})")
    if args.rows == 0:  # timing only
        return
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loop.train(model, lambda epoch: timed, config, cpu)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    groups = {"matmul": ("mm", "bmm", "addmm", "linear", "matmul", "mkldnn"), "copy/cast": ("copy_", "to", "_to_copy"),
              "dropout masks": ("bernoulli_", "random_"), "optimiser": ("_fused_adamw", "adamw")}
    for name, keys in groups.items():
        share = sum(e.self_cpu_time_total for e in events if any(e.key.removeprefix("aten::").startswith(k) for k in keys))
        print(f"{name:<14}{share / total:6.1%} of self CPU time")
    print(f"total self CPU time {total / 1e6:.2f} s over {args.steps} steps")


if __name__ == "__main__":
    main()

"""Training throughput and peak memory: our loop against Seq2SeqTrainer, full and LoRA; and how close to the
machine's limit our training runs.

    python bench/bench_train.py --model path/to/flan-t5-small --data path/to/dialogsum \
        --batch-size 8 --steps 30 --repeats 2

The work: the first steps x batch examples of a seeded shuffle of DialogSum train (zero-shot prompt -> first
summary), the architecture of `--model` with random weights (throughput does not depend on them), the same
hyper-parameters on every side: batch 8, AdamW lr 1e-4 (full) or 1e-3 (LoRA r=32, alpha=32, dropout 0.05 on q
and v), weight decay 0.01, clipping at 1.0, linear decay without warmup, one epoch.

Sides, each in a fresh process one after the other (bench/train_sides.py), so that each one's peak memory is its own:
* ours: train_loop.loop.train as `run.py` drives it, in `--precision` (default auto: bf16 autocast only where
  the device computes bf16 natively, model/device.py), with train_loop/cpu_speed.py on CPU;
* trainer-best: Seq2SeqTrainer (+ peft) with dynamic padding, `group_by_length`, in the same precision as ours;
* seeds: Seq2SeqTrainer, fp32, everything padded to 512/128 (the course notebooks). It is slow, so it runs
  `--seeds-steps` steps on the first examples of the same shuffle.
`--repeats N` runs the list of sides N times, interleaved, and reports each side's median run and the ratio of
each of our runs to the other stack's run in the same repeat: this machine's speed drifts over minutes.
Throughput = real (non-padding) input + label tokens of the timed steps / their seconds; the first `--warmup`
steps of each side are not timed.

Utilisation: the matmul FLOPs our timed steps executed (torch's FlopCounterMode over the same batches, forward
and backward: padding counted, the optimiser not) per second, over the best FLOP/s of a 4096 x 4096 matrix
product in the same dtype, measured in its own fresh process with the same threads.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

SIDES = [("ours", "full"), ("trainer-best", "full"), ("seeds", "full"),
         ("ours", "lora"), ("trainer-best", "lora"), ("seeds", "lora")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "flan-t5-small"))
    p.add_argument("--data", default=str(REPO / "data" / "dialogsum"))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seeds-steps", type=int, default=8, help="steps of the (slow) seeds' recipe")
    p.add_argument("--warmup", type=int, default=2, help="first steps of every side left out of the timing")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1, help="torch threads in every side (0: torch's default)")
    p.add_argument("--sides", default=",".join(f"{s}:{m}" for s, m in SIDES), help="e.g. ours:full,trainer-best:full")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the whole list of sides this many times, interleaved; each side's median run is reported")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="ours and trainer-best alike (model/device.py); the seeds' recipe is fp32")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (it reruns our timed batches)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "side:mode" or "matmul": run one, print JSON
    args = p.parse_args(argv)
    if args.repeats < 1 or args.steps <= args.warmup or args.seeds_steps <= args.warmup:
        p.error(f"need --repeats >= 1 and --steps, --seeds-steps above --warmup {args.warmup}")
    return args


def worker(args) -> dict:
    from bench import train_sides

    if args.worker == "matmul":
        return {name: train_sides.matmul_peak(dtype) for name, dtype in
                (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    side, mode = args.worker.split(":")
    common = dict(mode=mode, batch_size=args.batch_size, warmup=args.warmup, seed=args.seed, precision=args.precision)
    if side == "ours":
        return train_sides.run_ours(args.model, args.data, steps=args.steps, count_flops=not args.no_flops, **common)
    steps = args.seeds_steps if side == "seeds" else args.steps
    return train_sides.run_theirs(args.model, args.data, recipe=side.split("-")[-1], steps=steps, **common)


def spawn(args, what: str) -> dict:
    """Run one side in a fresh Python process with the same flags; its last stdout line is its JSON result."""
    argv = [sys.executable, __file__, *sys.argv[1:], "--worker", what]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"{what} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> str:
    from model.device import describe_machine

    gpu = f"; {describe_machine('cuda')}" if torch.cuda.is_available() else ""
    return (f"{os.cpu_count()} CPU cores, {describe_machine('cpu')}{gpu}; "
            "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


def precisions(args) -> str:
    """The precision of each side, said before any runs."""
    from model.device import choose_precision

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen, reason = choose_precision(args.precision, dev)
    return f"precision: ours and trainer-best {chosen} ({reason}); seeds fp32 (the notebooks' recipe)"


def report(args, results: dict, peak: dict) -> None:
    print(f"\n{'side':<14}{'mode':<6}{'steps':>6}{'real tok/s':>12}{'tok/CPU-s':>11}{'peak MiB':>10}"
          f"{'first loss':>12}{'last loss':>11}")
    for (side, mode), r in results.items():
        r["rate"], r["cpu_rate"] = r["real_tokens"] / r["seconds"], r["real_tokens"] / r["cpu_seconds"]
        print(f"{side:<14}{mode:<6}{len(r['losses']):>6}{r['rate']:>12.1f}{r['cpu_rate']:>11.1f}"
              f"{r['peak_memory_mb']:>10.0f}{r['losses'][0]:>12.4f}{r['losses'][-1]:>11.4f}")
    print()
    for mode in ("full", "lora"):
        ours = results.get(("ours", mode))
        for other, goal in (("trainer-best", 1.5), ("seeds", 3.0)):
            if ours and (other, mode) in results:
                theirs = results[(other, mode)]
                ratio, cpu_ratio = ours["rate"] / theirs["rate"], ours["cpu_rate"] / theirs["cpu_rate"]
                print(f"{mode}: ours / {other:<13}{ratio:6.2f}x by the clock, {cpu_ratio:5.2f}x per CPU-second "
                      f"(goal >= {goal}x: {'met' if min(ratio, cpu_ratio) >= goal else 'NOT met'})")
    print(f"\nmatmul peak (4096^3): bf16 {peak['bf16'] / 1e12:.3f} TFLOP/s, fp32 {peak['fp32'] / 1e12:.3f} TFLOP/s")
    for mode in ("full", "lora"):
        ours = results.get(("ours", mode))
        if ours and "flops" in ours:
            achieved = ours["flops"] / ours["seconds"]
            dtype = "bf16" if ours["precision"] == "bf16" else "fp32"
            print(f"ours {mode}: {ours['flops'] / 1e12:.2f} TFLOP executed in {ours['seconds']:.1f} s = "
                  f"{achieved / 1e12:.3f} TFLOP/s = {achieved / peak[dtype]:.1%} of the {dtype} matmul peak "
                  f"(goal >= 20%: {'met' if achieved / peak[dtype] >= 0.2 else 'NOT met'})")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    sides = [tuple(s.split(":")) for s in args.sides.split(",")]
    print(f"machine: {machine()}")
    print(precisions(args))
    print(f"work: {Path(args.model).name} random weights, {args.steps * args.batch_size} DialogSum train examples "
          f"(seed {args.seed}), batch {args.batch_size}, {args.steps} steps ({args.seeds_steps} for seeds), "
          f"first {args.warmup} not timed; device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    runs: dict[tuple, list] = {side: [] for side in sides}
    for repeat in range(args.repeats):  # interleaved, so a slow spell of the machine hits every side alike
        for side, mode in sides:
            runs[(side, mode)].append(r := spawn(args, f"{side}:{mode}"))
            print(f"  {side} {mode} in {r['precision']}{f' (run {repeat + 1})' if args.repeats > 1 else ''}: "
                  f"{r['real_tokens'] / r['seconds']:.1f} real tokens/s "
                  f"({r['real_tokens'] / r['cpu_seconds']:.1f} per CPU-second), "
                  f"losses {' '.join(f'{x:.3f}' for x in r['losses'])}", flush=True)
    results = {side: sorted(rs, key=lambda r: r["real_tokens"] / r["seconds"])[(len(rs) - 1) // 2]
               for side, rs in runs.items()}  # the median run (the lower middle one for an even count)
    if args.repeats > 1:
        for mode in ("full", "lora"):
            for other in ("trainer-best", "seeds"):
                if ("ours", mode) in runs and (other, mode) in runs:
                    pairs = [a["real_tokens"] / a["seconds"] / (b["real_tokens"] / b["seconds"])
                             for a, b in zip(runs[("ours", mode)], runs[(other, mode)])]
                    print(f"{mode}: ours / {other} run by run: {', '.join(f'{x:.2f}x' for x in pairs)}")
    report(args, results, spawn(args, "matmul"))


if __name__ == "__main__":
    main()

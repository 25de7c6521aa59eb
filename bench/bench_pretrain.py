"""Pretraining throughput: our loop against Seq2SeqTrainer on the same model and the same examples.

    python bench/bench_pretrain.py --steps 24 --warmup 4 --repeats 2

The work: the first steps x batch examples of pretraining's epoch 0 (pretrain/mixture.py: span corruption and
instructions from DialogSum's train dialogues), the architecture of `--model` (default models/baby-flan-t5) with
random weights and dropout off, as `--mode pretrain` builds it; AdamW, lr 1.5e-3 on both sides (`--mode pretrain`
now defaults to Adafactor, which the Trainer's `optim="adafactor"` runs without its parameter scaling, so the two
would not do the same arithmetic; this measures the loops, not the optimisers), batch 16, in `--precision`
(auto: bf16 only where the device computes it natively). Each side runs in a fresh process, the sides interleaved
`--repeats` times; throughput = real (non-padding) input + label tokens of the timed steps / their seconds.
* ours: train_loop.loop.train on pretraining_batches (length-grouped, padded per batch), cpu_speed on CPU;
* trainer: Seq2SeqTrainer with dynamic padding and `group_by_length`, the same examples as token ids.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(REPO / "models" / "baby-flan-t5"))
    p.add_argument("--data", default=str(REPO / "data" / "dialogsum"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--warmup", type=int, default=4, help="first steps of every side left out of the timing")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads in every side")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps <= args.warmup:
        p.error(f"--steps {args.steps} must be above --warmup {args.warmup}")
    return args


def work(args):
    """(model, tokenizer, batches, (inputs, labels)): the same examples for both sides, in our batches' order."""
    from modes.pretrain import build_model, texts_of_train_split
    from pretrain.mixture import pretraining_batches
    from model.load import load_tokenizer
    from train_loop.data import IGNORE_INDEX

    tokenizer = load_tokenizer(args.model)
    texts = texts_of_train_split(args.data, args.steps * args.batch_size // 2, args.seed)  # 2 examples each
    batches = pretraining_batches(texts, tokenizer, args.batch_size, args.seed)(0)[: args.steps]
    rows = [(ids[mask.bool()].tolist(), lab[lab != IGNORE_INDEX].tolist()) for b in batches
            for ids, mask, lab in zip(b["input_ids"], b["attention_mask"], b["labels"])]
    return build_model(args.model, args.seed), tokenizer, batches, ([r[0] for r in rows], [r[1] for r in rows])


def side(args) -> dict:
    from train_loop import loop
    from model.device import choose_precision
    from train_loop.step import OptimConfig

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = choose_precision(args.precision, dev)[0]
    model, tokenizer, batches, encoded = work(args)
    if args.worker == "trainer":
        from bench.trainer_stack import run_trainer

        out = run_trainer(model, tokenizer, None, None, recipe="best", lora=False, steps=args.steps,
                          batch_size=args.batch_size, lr=1.5e-3, warmup_steps_timed=args.warmup, seed=args.seed,
                          precision=precision, encoded=encoded)
        return {**out, "precision": precision}
    if dev.type == "cpu":
        from train_loop.cpu_speed import speed_up_on_cpu

        speed_up_on_cpu(model)
    ends, tokens = [], []

    def clock(record):
        ends.append((time.perf_counter(), time.process_time()))
        tokens.append(record["tokens"])
    config = loop.TrainConfig(optim=OptimConfig(lr=1.5e-3), max_steps=args.steps, precision=precision,
                              progress_bar=False)
    result = loop.train(model, lambda epoch: batches, config, dev, on_step=clock)
    w = args.warmup - 1
    return {"losses": result.progress.losses, "seconds": ends[-1][0] - ends[w][0],
            "cpu_seconds": ends[-1][1] - ends[w][1], "real_tokens": sum(tokens[args.warmup:]),
            "precision": precision}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(side(args)))
        return
    from model.device import describe_machine

    print(f"machine: {os.cpu_count()} CPU cores, {describe_machine('cpu')}; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"work: {Path(args.model).name} random weights, {args.steps} pretraining batches of {args.batch_size}, "
          f"first {args.warmup} not timed, {args.threads} thread(s)")
    rates = {"ours": [], "trainer": []}
    for repeat in range(args.repeats):
        for name in rates:
            done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--worker", name], capture_output=True,
                                  text=True, cwd=REPO)
            if done.returncode:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            rates[name].append(r["real_tokens"] / r["seconds"])
            print(f"  {name} ({r['precision']}, run {repeat + 1}): {rates[name][-1]:.0f} real tokens/s, "
                  f"{r['real_tokens'] / r['cpu_seconds']:.0f} per CPU-second; losses {r['losses'][0]:.3f} -> "
                  f"{r['losses'][-1]:.3f}", flush=True)
    print("ours / trainer, run by run: " + ", ".join(f"{a / b:.2f}x" for a, b in zip(rates["ours"], rates["trainer"])))


if __name__ == "__main__":
    main()

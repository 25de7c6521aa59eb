"""Dropout on CPU: torch's `F.dropout` against train_loop/cpu_speed.py, forward and backward, on T5's shapes.

    python bench/bench_dropout.py

Shapes of one flan-t5-small step at batch 8 with 300-token inputs: the hidden states (8, 300, 512), the gated
feed-forward (8, 300, 1024) and the attention probabilities (8, 6, 300, 300). Best of 7 runs each, one thread.
Also the raw cost of the random numbers themselves: torch.rand (one 32-bit draw per element), bernoulli_ (what
F.dropout uses) and the 64-bit words keep_mask draws (one per two elements).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from train_loop.cpu_speed import fast_dropout  # noqa: E402
from model.device import describe_machine  # noqa: E402

SHAPES = [(8, 300, 512), (8, 300, 1024), (8, 6, 300, 300)]
P = 0.1


def best_ms(fn, repeats: int = 7) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def main() -> None:
    torch.set_num_threads(1)
    print(f"machine: {describe_machine('cpu')}")
    print(f"fp32 tensors on both sides, 1 thread, p={P}, best of 7 (ms)")
    print(f"{'shape':<18}{'rand':>8}{'bernoulli_':>12}{'64-bit words':>14}{'F.dropout f+b':>15}{'ours f+b':>10}{'ratio':>8}")
    for shape in SHAPES:
        x = torch.randn(shape, requires_grad=True)
        grad = torch.randn(shape)
        n = x.numel()
        rand = best_ms(lambda: torch.rand(shape))
        bern = best_ms(lambda: torch.empty(shape).bernoulli_(1 - P))
        words = best_ms(lambda: torch.randint(torch.iinfo(torch.int64).min, torch.iinfo(torch.int64).max,
                                              ((n + 1) // 2,), dtype=torch.int64))
        theirs = best_ms(lambda: F.dropout(x, P, training=True).backward(grad))
        ours = best_ms(lambda: fast_dropout(x, P).backward(grad))
        print(f"{str(shape):<18}{rand:>8.1f}{bern:>12.1f}{words:>14.1f}{theirs:>15.1f}{ours:>10.1f}{theirs / ours:>7.2f}x")


if __name__ == "__main__":
    main()

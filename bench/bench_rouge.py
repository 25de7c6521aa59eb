"""Our ROUGE (eval/rouge.py) against rouge_score 0.1.2: time on the same 3,000 DialogSum pairs, and agreement.

    python bench/bench_rouge.py [--repeats 3]

Pairs: each of the three human summaries of every DialogSum test dialogue against each other one. Each side
scores all pairs with rouge1, rouge2, rougeL and rougeLsum; the best of `--repeats` runs counts. Our Porter-stem
cache is emptied before every timed run, so the cache only helps within a run, as it would in an evaluation.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rouge_score import rouge_scorer  # noqa: E402

from eval import rouge  # noqa: E402
from model.device import describe_machine  # noqa: E402
from prompting.dialogsum import open_text  # noqa: E402

DATA = REPO / "data" / "dialogsum" / "dialogsum.test.jsonl.gz"


def dialogsum_pairs() -> list[tuple[str, str]]:
    with open_text(DATA) as f:
        rows = [json.loads(line) for line in f]
    summaries = [(r["summary1"], r["summary2"], r["summary3"]) for r in rows]
    return [(s[i], s[j]) for s in summaries for i in range(3) for j in range(3) if i != j]


def best_time(score_all, repeats: int, before=lambda: None) -> tuple[float, list]:
    best, results = float("inf"), None
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        results = score_all()
        best = min(best, time.perf_counter() - start)
    return best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pairs = dialogsum_pairs()
    print(f"machine: {describe_machine('cpu')}; both sides plain Python (no tensors, no precision to choose)")
    print(f"{len(pairs)} pairs, rouge1/rouge2/rougeL/rougeLsum, best of {args.repeats}; "
          f"python {platform.python_version()}, {platform.machine()}")
    for use_stemmer in (True, False):
        scorer = rouge_scorer.RougeScorer(list(rouge.ROUGE_TYPES), use_stemmer=use_stemmer)
        theirs_s, theirs = best_time(lambda: [scorer.score(r, c) for r, c in pairs], args.repeats)
        ours_s, ours = best_time(lambda: [rouge.score(r, c, use_stemmer) for r, c in pairs], args.repeats,
                                 before=rouge.porter_stem.cache_clear)
        largest = max(abs(a - b) for o, t in zip(ours, theirs) for k in rouge.ROUGE_TYPES for a, b in zip(o[k], t[k]))
        print(f"stemmer {'on ' if use_stemmer else 'off'}: rouge_score {theirs_s:.3f} s, ours {ours_s:.3f} s, "
              f"ours is {theirs_s / ours_s:.2f}x as fast; largest |difference| in P/R/F: {largest:.3g}")


if __name__ == "__main__":
    main()

"""One set of predictions, scored the several ways people score it, and why each way gives another number.

"ROUGE-1 = 0.42" is not a property of the summaries alone: it also depends on four choices, and tools differ in
every one of them. The course notebook (Hugging Face `evaluate`, `use_aggregator=True, use_stemmer=True`) scores
each of its 1,500 test rows against the one human summary on that row and reports the median of 1,000 unseeded
bootstrap means; this project scores each of the 500 dialogues once against the best of its three human
summaries, takes the exact mean and splits sentences for ROUGE-Lsum. `several_ways` scores the same predictions
each way, so the differences are measured instead of guessed. The four choices:

1. **Per row or per dialogue.** Best-of-k (`rouge_score`'s `score_multi`) credits a prediction for matching any
   annotator, so it is higher than the mean over single references.
2. **Exact mean or bootstrap median.** `rouge_score.scoring.BootstrapAggregator` reports the median of resampled
   means; it lies within a few 1e-4 of the mean, and changes with every call unless seeded (seeded here).
3. **Stemmer on or off.** Porter stemming makes "talks" match "talk"; `evaluate`'s default is off.
4. **ROUGE-Lsum's sentences.** Lsum reads sentences as lines. FLAN-T5 writes no newlines, so on raw text Lsum
   equals ROUGE-L; the Hugging Face summarization example splits sentences first, which raises Lsum for
   summaries of several sentences.

Every mean comes with a seeded 95% percentile-bootstrap interval (`eval/evaluate.bootstrap_interval`).
"""
from __future__ import annotations

import numpy as np

from eval.evaluate import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrap_interval, bootstrap_means, score_corpus
from eval.rouge import ROUGE_TYPES

COURSE = "course: per row, one reference"
MULTI_REFERENCE = "per dialogue, best of k (this project)"

# (name, items: "row" | "dialogue", stemmer, sentences split for Lsum, aggregate: "mean" | "median", why)
WAYS = (
    (COURSE, "row", True, False, "mean",
     "What the course prints: each row against the one human summary on it, stemmer on, text as written; the "
     "exact mean of rouge_score's per-row F-measures."),
    ("course, evaluate's bootstrap median", "row", True, False, "median",
     "evaluate's use_aggregator=True: the median of 1,000 bootstrap means instead of the mean; a few 1e-4 away, "
     "and different on every call unless seeded (seeded here)."),
    ("per row, stemmer off", "row", False, False, "mean",
     "evaluate's default: without Porter stemming 'talks' no longer matches 'talk', so every score drops."),
    ("per row, Lsum on sentences", "row", True, True, "mean",
     "Sentences split onto lines before scoring (the Hugging Face summarization example): only ROUGE-Lsum "
     "changes; it rises for summaries of several sentences."),
    (MULTI_REFERENCE, "dialogue", True, True, "mean",
     "Each dialogue once, against the best of its k human summaries per ROUGE type: higher, because matching "
     "any annotator counts; this project's default."),
    ("per dialogue, best of k, text as written", "dialogue", True, False, "mean",
     "As above without the sentence split: ROUGE-1, -2 and -L are unchanged, Lsum falls back to ROUGE-L."),
)


def score_one_way(items, use_stemmer: bool, sentences: bool, aggregate: str, resamples: int = BOOTSTRAP_RESAMPLES,
                  seed: int = BOOTSTRAP_SEED) -> dict:
    """{"rouge1": value, ..., "rouge1_low": ..., "rouge1_high": ...}: the mean (or bootstrap median) F-measure
    per type and its seeded 95% interval. `items` have `.references` and `.prediction`."""
    means, per_item = score_corpus(items, [item.prediction for item in items], use_stemmer=use_stemmer,
                               sentences=sentences)
    values = np.array([[row[t] for t in ROUGE_TYPES] for row in per_item])  # (items, types)
    if aggregate == "median":
        central = np.median(bootstrap_means(values, resamples, seed), axis=0)  # (types,)
    elif aggregate == "mean":  # math.fsum's exact mean, as in every run's metrics.json
        central = np.array([means[t] for t in ROUGE_TYPES])
    else:
        raise ValueError(f"aggregate {aggregate!r}: expected 'mean' or 'median'")
    low, high = bootstrap_interval(values, resamples, seed)  # (types,) each
    result = {}
    for i, t in enumerate(ROUGE_TYPES):
        result[t], result[f"{t}_low"], result[f"{t}_high"] = float(central[i]), float(low[i]), float(high[i])
    return result


def several_ways(row_items, dialogue_items=None, missing_reason: str = "") -> list[dict]:
    """Each way of WAYS that the items allow, as {"way", "items", "count", "references" (per item), "stemmer",
    "sentences", "aggregate", "why", scores...}. Without `dialogue_items` the per-dialogue ways are listed
    unscored, with `missing_reason` in their "why"."""
    rows = []
    for name, unit, stemmer, sentences, aggregate, why in WAYS:
        items = row_items if unit == "row" else dialogue_items
        entry = {"way": name, "items": unit, "stemmer": stemmer, "sentences": sentences, "aggregate": aggregate,
                 "why": why}
        if items is None:
            rows.append({**entry, "count": 0, "why": f"{why} Not scored: {missing_reason}"})
            continue
        rows.append({**entry, "count": len(items), "references": len(items[0].references),
                     **score_one_way(items, stemmer, sentences, aggregate)})
    return rows


def with_interval(way: dict, rouge_type: str) -> str:
    """'42.14 [41.2, 43.1]': points with the 95% interval, or the point value alone when there is none."""
    value = f"{100 * way[rouge_type]:.2f}"
    if f"{rouge_type}_low" in way:
        value += f" [{100 * way[f'{rouge_type}_low']:.1f}, {100 * way[f'{rouge_type}_high']:.1f}]"
    return value


def ways_table(ways: list[dict]) -> list[str]:
    """Markdown lines: one row per way, ROUGE in points with seeded 95% intervals, then why each differs."""
    headings = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
    lines = ["| way | scored | " + " | ".join(headings[t] for t in ROUGE_TYPES) + " |",
             "|" + " --- |" * (2 + len(ROUGE_TYPES))]
    for way in ways:
        if not way["count"]:
            cells = ["not scored"] * len(ROUGE_TYPES)
        else:
            cells = [with_interval(way, t) for t in ROUGE_TYPES]
        lines.append(f"| {way['way']} | {way['count']} {way['items']}s | " + " | ".join(cells) + " |")
    lines += ["", "Points (F-measure x 100), [seeded 95% bootstrap interval of the mean, "
              f"{BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}].", ""]
    lines += [f"- **{way['way']}**: {way['why']}" for way in ways]
    return lines


def plain_table(title: str, rows: list[tuple[str, dict]], digits: int = 5) -> list[str]:
    """A fixed-width text table of fractions, like the one the course prints: `title`, then `name  r1  r2  L  Lsum`."""
    width = max([len(name) for name, _ in rows] + [len("model")])
    lines = [title, f"{'model':<{width}}  " + "  ".join(f"{t:>9}" for t in ROUGE_TYPES)]
    lines += [f"{name:<{width}}  " + "  ".join(f"{scores[t]:>9.{digits}f}" for t in ROUGE_TYPES)
              for name, scores in rows]
    return lines

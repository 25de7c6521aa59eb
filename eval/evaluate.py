"""Corpus ROUGE: score every prediction against its references, then take exact means (and, if asked, a CI).

Two choices differ from Hugging Face `evaluate`'s "rouge", and both are deliberate (docs/NOTES.md, "ROUGE"):

* the corpus score is the exact mean of the per-example F-measures, not the median of 1,000 unseeded bootstrap
  resamples; a confidence interval is optional and comes from a seeded generator, so it repeats;
* the stemmer is on by default, as in the course (`evaluate`'s default is off).

ROUGE-Lsum reads sentences as lines, and FLAN-T5 never writes a newline, so without help Lsum would equal
ROUGE-L. The Hugging Face summarisation example therefore puts each sentence of predictions and references on
its own line first (with `nltk.sent_tokenize`). nltk's punkt data cannot be downloaded here, so
`split_sentences` does the same with a regex. Only newlines are added, and the tokenizer treats a newline as any
other space, so ROUGE-1, -2 and -L are unchanged by it.
"""
from __future__ import annotations

import math
import re

import numpy as np

from eval.rouge import ROUGE_TYPES, score

# A sentence ends after . ! or ? followed by whitespace, except after a title such as "Mr." (punkt knows
# these; DialogSum's summaries use them).
SENTENCE_BOUNDARY = re.compile(r"(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<=[.!?])\s+")

LSUM_SENTENCE_NOTE = (
    "rougeLsum: predictions and references were split into sentences before scoring (after . ! ? followed by "
    "whitespace, not after Mr./Mrs./Ms./Dr./St.; a regex because nltk's punkt data is not available offline) "
    "and the sentences joined with newlines, as the Hugging Face summarization example does with nltk.sent_tokenize"
)


def split_sentences(text: str) -> str:
    """One sentence per line: "Hi. Bye!" -> "Hi.\\nBye!". Only whitespace is replaced."""
    return "\n".join(SENTENCE_BOUNDARY.split(text.strip()))


# Every interval this project prints: 1,000 resamples (BootstrapAggregator's default), one fixed seed.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The mean of each column of `values` (examples, types) over `resamples` resamples of the rows, drawn with
    replacement from a seeded generator -> (resamples, types). All columns share the same resampled rows."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(values), size=(resamples, len(values)))  # (resamples, examples)
    return values[rows].mean(axis=1)  # (resamples, types)


def bootstrap_interval(values: np.ndarray, resamples: int, seed: int, confidence: float = 0.95) -> np.ndarray:
    """Percentile bootstrap CI of the mean of each column of `values` (examples, types) -> (2, types).

    Percentiles of resampled means, as `rouge_score.scoring.BootstrapAggregator` computes them, but the
    generator is seeded, so the interval is the same every run.
    """
    tail = 100 * (1 - confidence) / 2
    return np.percentile(bootstrap_means(values, resamples, seed), [tail, 100 - tail], axis=0)


def score_corpus(examples, predictions: list[str], use_stemmer: bool = True, bootstrap: int = 0,
                 seed: int = 0, sentences: bool = True) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Mean ROUGE F-measures over the corpus, and each example's.

    `sentences=False` scores the texts as given, as `evaluate` does: then ROUGE-Lsum equals ROUGE-L for
    summaries without newlines.

    `examples` have `.references` (a tuple of one or more summaries; several on DialogSum test: the best F
    per ROUGE type counts). Returns ({"rouge1": mean F, ...}, [{"rouge1": F, ...} per example]); with
    `bootstrap` > 0 the first dict also holds "<type>_low" and "<type>_high", a 95% interval of the mean.
    """
    if len(examples) != len(predictions):
        raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions: one prediction per example")
    if not examples:
        raise ValueError("no examples to score: the split is empty or --max-eval-samples is 0")
    if bootstrap < 0:
        raise ValueError(f"bootstrap={bootstrap}: the number of resamples must be 0 (none) or positive")
    per_example = []
    for example, prediction in zip(examples, predictions):
        split = split_sentences if sentences else str
        references = [split(r) for r in example.references]
        scores = score(references, split(prediction), use_stemmer=use_stemmer)
        per_example.append({t: scores[t].fmeasure for t in ROUGE_TYPES})
    corpus = {t: math.fsum(row[t] for row in per_example) / len(per_example) for t in ROUGE_TYPES}
    if bootstrap:
        values = np.array([[row[t] for t in ROUGE_TYPES] for row in per_example])  # (examples, types)
        low, high = bootstrap_interval(values, bootstrap, seed)
        for i, t in enumerate(ROUGE_TYPES):
            corpus[f"{t}_low"], corpus[f"{t}_high"] = float(low[i]), float(high[i])
    return corpus, per_example

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


def bootstrap_interval(values: np.ndarray, resamples: int, seed: int, confidence: float = 0.95) -> np.ndarray:
    """Percentile bootstrap CI of the mean of each column of `values` (examples, types) -> (2, types).

    All columns share the same resampled rows, as `rouge_score.scoring.BootstrapAggregator` does, but the
    generator is seeded, so the interval is the same every run.
    """
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(values), size=(resamples, len(values)))  # (resamples, examples)
    means = values[rows].mean(axis=1)  # (resamples, types)
    tail = 100 * (1 - confidence) / 2
    return np.percentile(means, [tail, 100 - tail], axis=0)


def score_corpus(examples, predictions: list[str], use_stemmer: bool = True, bootstrap: int = 0,
                 seed: int = 0) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Mean ROUGE F-measures over the corpus, and each example's.

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
        references = [split_sentences(r) for r in example.references]
        scores = score(references, split_sentences(prediction), use_stemmer=use_stemmer)
        per_example.append({t: scores[t].fmeasure for t in ROUGE_TYPES})
    corpus = {t: math.fsum(row[t] for row in per_example) / len(per_example) for t in ROUGE_TYPES}
    if bootstrap:
        values = np.array([[row[t] for t in ROUGE_TYPES] for row in per_example])  # (examples, types)
        low, high = bootstrap_interval(values, bootstrap, seed)
        for i, t in enumerate(ROUGE_TYPES):
            corpus[f"{t}_low"], corpus[f"{t}_high"] = float(low[i]), float(high[i])
    return corpus, per_example

"""ROUGE from scratch: tokenizer, n-gram overlap, LCS, summary-level (union) LCS, precision/recall/F.

ROUGE (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries") compares a candidate summary with a
reference summary by counting what they share:

* ROUGE-N: overlapping n-grams, each counted at most as often as it occurs in both ("clipped"), section 2;
* ROUGE-L: the longest common subsequence (LCS) of the two token sequences, section 3.1;
* ROUGE-Lsum: summary-level LCS, section 3.2: for each reference sentence, the union of its LCS with every
  candidate sentence.

This file reproduces `rouge_score` 0.1.2 (google-research/rouge, what Hugging Face `evaluate`'s "rouge" wraps)
exactly, function by function, so `tests/test_rouge.py` can compare each piece with its counterpart there.
Sentences for ROUGE-Lsum are the lines of the text, as in `rouge_score`; splitting prose into lines is the
evaluation step's job (`eval/evaluate.py`).
"""
from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import NamedTuple

from nltk.stem import porter

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")
VALID_TOKEN = re.compile(r"^[a-z0-9]+$")

# rouge_score builds `porter.PorterStemmer()`: nltk's default NLTK_EXTENSIONS mode, not ORIGINAL_ALGORITHM
# (they differ: "dying" -> "die" vs "dy").
_STEMMER = porter.PorterStemmer()


class Score(NamedTuple):
    """Precision, recall and F-measure of one ROUGE type, as `rouge_score.scoring.Score`."""

    precision: float
    recall: float
    fmeasure: float


ZERO = Score(0.0, 0.0, 0.0)


@lru_cache(maxsize=1 << 16)
def porter_stem(token: str) -> str:
    """Porter stem of one token, cached: a corpus repeats few words many times, and stemming is the slow part."""
    return _STEMMER.stem(token)


def tokenize(text: str, use_stemmer: bool = False) -> list[str]:
    """Lowercase; every run outside [a-z0-9] becomes a space; split; stem tokens longer than 3 (as
    `rouge_score.tokenize.tokenize`, after ROUGE-1.5.5): "Café, 3.14!" -> ["caf", "3", "14"]."""
    tokens = NON_ALPHANUMERIC.sub(" ", text.lower()).split()
    if use_stemmer:
        tokens = [porter_stem(t) if len(t) > 3 else t for t in tokens]
    return [t for t in tokens if VALID_TOKEN.match(t)]


def sentences(text: str) -> list[str]:
    """ROUGE-Lsum's sentences: the non-empty lines of the text (a line of spaces still counts, as in rouge_score)."""
    return [line for line in text.split("\n") if line]


def fmeasure(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall; 0 when both are 0."""
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def ngram_counts(tokens: list[str], n: int) -> Counter:
    """How often each n-gram (a tuple of n tokens) occurs: "a b a b" -> {(a, b): 2, (b, a): 1} for n=2."""
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def score_ngrams(reference_ngrams: Counter, candidate_ngrams: Counter) -> Score:
    """ROUGE-N: each shared n-gram counts min(times in reference, times in candidate) ("clipping")."""
    overlap = sum((reference_ngrams & candidate_ngrams).values())
    precision = overlap / max(sum(candidate_ngrams.values()), 1)
    recall = overlap / max(sum(reference_ngrams.values()), 1)
    return Score(precision, recall, fmeasure(precision, recall))


def lcs_table(reference: list[str], candidate: list[str]) -> list[list[int]]:
    """table[i][j] = LCS length of reference[:i] and candidate[:j]; shape (len(reference) + 1, len(candidate) + 1)."""
    table = [[0] * (len(candidate) + 1)]
    for ref_token in reference:
        above = table[-1]
        row = [0]
        for j, cand_token in enumerate(candidate):
            if ref_token == cand_token:
                row.append(above[j] + 1)  # extend the LCS of both shorter prefixes
            else:
                up, left = above[j + 1], row[j]  # drop the reference token, or the candidate token
                row.append(up if up >= left else left)  # max(up, left) without a call: the hot loop
        table.append(row)
    return table


def score_lcs(reference: list[str], candidate: list[str]) -> Score:
    """ROUGE-L: P = LCS / candidate length, R = LCS / reference length."""
    if not reference or not candidate:
        return ZERO
    lcs = lcs_table(reference, candidate)[-1][-1]
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return Score(precision, recall, fmeasure(precision, recall))


def lcs_indices(reference: list[str], candidate: list[str]) -> list[int]:
    """Positions in `reference` of one LCS, read back from the table from the bottom-right corner.

    Which LCS, when several exist, changes the union in ROUGE-Lsum, so the walk is rouge_score's (and
    ROUGE-1.5.5's): on equal tokens go diagonally; else go left only if that cell is strictly larger, else up.
    """
    table = lcs_table(reference, candidate)
    i, j = len(reference), len(candidate)
    indices = []
    while i > 0 and j > 0:
        if reference[i - 1] == candidate[j - 1]:
            indices.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return indices[::-1]


def union_lcs(reference_sentence: list[str], candidate_sentences: list[list[str]]) -> list[str]:
    """Tokens of the reference sentence that lie on its LCS with any candidate sentence, in order (Lin 2004, 3.2)."""
    positions = set()
    for candidate in candidate_sentences:
        positions.update(lcs_indices(reference_sentence, candidate))
    return [reference_sentence[i] for i in sorted(positions)]


def summary_level_lcs(reference_sentences: list[list[str]], candidate_sentences: list[list[str]]) -> Score:
    """ROUGE-Lsum: union-LCS hits summed over reference sentences, over all reference / candidate tokens.

    A token is a hit only while both summaries still have an unused copy of it, so a candidate word matched by
    two reference sentences is not counted twice (ROUGE-1.5.5 does this; the paper's formula does not).
    """
    m = sum(map(len, reference_sentences))
    n = sum(map(len, candidate_sentences))
    if not m or not n:
        return ZERO
    reference_left = Counter(t for sentence in reference_sentences for t in sentence)
    candidate_left = Counter(t for sentence in candidate_sentences for t in sentence)
    hits = 0
    for sentence in reference_sentences:
        for token in union_lcs(sentence, candidate_sentences):
            if reference_left[token] > 0 and candidate_left[token] > 0:
                hits += 1
                reference_left[token] -= 1
                candidate_left[token] -= 1
    precision, recall = hits / n, hits / m
    return Score(precision, recall, fmeasure(precision, recall))


class Tokenized(NamedTuple):
    """A text's tokens, whole and per line: computed once, used by every ROUGE type and every reference."""

    tokens: list[str]
    sentence_tokens: list[list[str]]


def tokenized(text: str, use_stemmer: bool) -> Tokenized:
    if not isinstance(text, str):
        raise ValueError(f"ROUGE scores strings; got {type(text).__name__}: {text!r:.60}")
    tokens = tokenize(text, use_stemmer)
    if "\n" not in text:  # one line: its tokens are the text's (or no line at all for "")
        return Tokenized(tokens, [tokens] if text else [])
    return Tokenized(tokens, [tokenize(s, use_stemmer) for s in sentences(text)])


def score_tokenized(reference: Tokenized, candidate: Tokenized) -> dict[str, Score]:
    """All four ROUGE types of one candidate against one reference. With one sentence on each side the union LCS
    is the LCS itself, so ROUGE-Lsum equals ROUGE-L: reused rather than filling the same table twice."""
    rouge_l = score_lcs(reference.tokens, candidate.tokens)
    one_line = len(reference.sentence_tokens) == len(candidate.sentence_tokens) == 1
    return {
        "rouge1": score_ngrams(ngram_counts(reference.tokens, 1), ngram_counts(candidate.tokens, 1)),
        "rouge2": score_ngrams(ngram_counts(reference.tokens, 2), ngram_counts(candidate.tokens, 2)),
        "rougeL": rouge_l,
        "rougeLsum": rouge_l if one_line else summary_level_lcs(reference.sentence_tokens, candidate.sentence_tokens),
    }


def best_by_fmeasure(per_reference: list[dict[str, Score]]) -> dict[str, Score]:
    """Multi-reference ROUGE: per type, the reference with the highest F (the first one on ties), as score_multi."""
    if not per_reference:
        return {rouge_type: ZERO for rouge_type in ROUGE_TYPES}
    return {t: max((scores[t] for scores in per_reference), key=lambda s: s.fmeasure) for t in ROUGE_TYPES}


def score(references: str | list[str] | tuple[str, ...], prediction: str, use_stemmer: bool = True) -> dict[str, Score]:
    """ROUGE-1, -2, -L and -Lsum of `prediction` against one reference (first, as `RougeScorer.score(target,
    prediction)`) or the best of several (as `score_multi`). Empty texts (or no references) score 0."""
    candidate = tokenized(prediction, use_stemmer)
    if isinstance(references, str):
        references = [references]
    return best_by_fmeasure([score_tokenized(tokenized(r, use_stemmer), candidate) for r in references])

"""ROUGE from scratch (eval/rouge.py) equals rouge_score 0.1.2: piece by piece, and whole scores on real pairs.

The reference is the library itself, never numbers written here: every comparison calls rouge_score on the
same inputs. Pairs: each of the three human summaries of every DialogSum test dialogue against each other one
(500 x 6 = 3,000), the same pairs with one sentence per line (so ROUGE-Lsum's union LCS really works), and
hand-made hard cases.
"""
import itertools
import json

import pytest
from rouge_score import rouge_scorer, tokenizers

from eval import rouge
from eval.rouge import ROUGE_TYPES
from prompting.dialogsum import open_text, split_file
from tests.conftest import DATA_DIR

TOLERANCE = 1e-12

LONG_A = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 30)
LONG_B = "\n".join(["A lazy dog sleeps by the river while the brown fox runs, jumps and hides."] * 30)
HARD_CASES = [
    "", " ", "\n", "\n\n", "!!!", "...?! -- ,,", "Café naïve ÉCOLE façade", "İstanbul STRASSE straße ﬁne",
    "Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ 日本語のテキスト", "3.14 and 2,000 items on 12/05/2021 at 9am", "the the the the the",
    "a a b a b b a", "#Person1# asks #Person2# about the meeting at 3 p.m.", "running runs ran runner dying skies news",
    "Line one.\nLine two is here.\n\nLine three, line one.", "\nleading and trailing newlines\n",
    "  spaced   out\ttabs\r\nand CRLF  ", "a b c\nb c a\nc a b\n \na", LONG_A, LONG_B,
]


def load_dialogsum_test_summaries() -> list[tuple[str, str, str]]:
    with open_text(split_file(DATA_DIR, "test")) as f:  # .jsonl or .jsonl.gz
        rows = [json.loads(line) for line in f]
    return [(row["summary1"], row["summary2"], row["summary3"]) for row in rows]


SUMMARIES = load_dialogsum_test_summaries()
# (reference, candidate): each summary against each other summary of the same dialogue.
DIALOGSUM_PAIRS = [(refs[i], refs[j]) for refs in SUMMARIES for i in range(3) for j in range(3) if i != j]
MULTILINE_PAIRS = [(a.replace(". ", ".\n"), b.replace(". ", ".\n")) for a, b in DIALOGSUM_PAIRS]
HARD_PAIRS = list(itertools.product(HARD_CASES, repeat=2))


def largest_difference(ours: dict, theirs: dict) -> float:
    return max(abs(a - b) for t in ROUGE_TYPES for a, b in zip(ours[t], theirs[t]))


def assert_scores_match(pairs, use_stemmer: bool) -> None:
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    for reference, candidate in pairs:
        ours, theirs = rouge.score(reference, candidate, use_stemmer), scorer.score(reference, candidate)
        assert largest_difference(ours, theirs) <= TOLERANCE, (reference[:80], candidate[:80], ours, theirs)


def test_the_pair_set_is_three_thousand_pairs():
    assert len(SUMMARIES) == 500 and len(DIALOGSUM_PAIRS) == 3000
    assert sum("\n" in a for a, _ in MULTILINE_PAIRS) > 1000  # the multi-line set really has several lines


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_tokenize_matches_rouge_score(use_stemmer):
    theirs = tokenizers.DefaultTokenizer(use_stemmer)  # what RougeScorer tokenizes with
    for text in HARD_CASES + [s for refs in SUMMARIES for s in refs]:
        assert rouge.tokenize(text, use_stemmer) == theirs.tokenize(text), text


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_counts_match_rouge_score(n):
    for text in HARD_CASES + [refs[0] for refs in SUMMARIES]:
        tokens = rouge.tokenize(text)
        assert rouge.ngram_counts(tokens, n) == rouge_scorer._create_ngrams(tokens, n), text


def tokenized_pairs(pairs, use_stemmer=True):
    return [(rouge.tokenize(a, use_stemmer), rouge.tokenize(b, use_stemmer)) for a, b in pairs]


def test_lcs_table_and_lcs_indices_match_rouge_score():
    for ref, cand in tokenized_pairs(DIALOGSUM_PAIRS[:600] + HARD_PAIRS):
        assert rouge.lcs_table(ref, cand) == rouge_scorer._lcs_table(ref, cand)
        # Which of several LCSs the walk picks decides Lsum's union: it must be the same one.
        assert rouge.lcs_indices(ref, cand) == rouge_scorer.lcs_ind(ref, cand)


def sentence_tokens(text):
    return [rouge.tokenize(s, True) for s in rouge.sentences(text)]


def test_union_lcs_and_summary_level_lcs_match_rouge_score():
    for ref_text, cand_text in MULTILINE_PAIRS[:600] + HARD_PAIRS:
        ref_sentences, cand_sentences = sentence_tokens(ref_text), sentence_tokens(cand_text)
        for sentence in ref_sentences:
            assert rouge.union_lcs(sentence, cand_sentences) == rouge_scorer._union_lcs(sentence, cand_sentences)
        ours = rouge.summary_level_lcs(ref_sentences, cand_sentences)
        assert ours == rouge_scorer._summary_level_lcs(ref_sentences, cand_sentences)


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_scores_match_rouge_score_on_3000_dialogsum_pairs(use_stemmer):
    assert_scores_match(DIALOGSUM_PAIRS, use_stemmer)


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_scores_match_rouge_score_on_multiline_pairs(use_stemmer):
    assert_scores_match(MULTILINE_PAIRS, use_stemmer)


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_scores_match_rouge_score_on_hard_cases(use_stemmer):
    assert_scores_match(HARD_PAIRS, use_stemmer)


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_multi_reference_matches_score_multi(use_stemmer):
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    cases = []
    for i, refs in enumerate(SUMMARIES):
        # Two references of the same dialogue and one of the next: the best one differs between examples.
        cases.append(([refs[1], refs[2], SUMMARIES[(i + 1) % len(SUMMARIES)][0]], refs[0]))
    # Ties: equal F from different references (the first wins) and duplicated references.
    cases += [(["a b", "a b c d"], "a b c"), (["x y", "x y"], "x"), (["", "a"], "a"), (["a\nb", "b a"], "a b")]
    cases += [([LONG_A, LONG_B, ""], LONG_B)]
    for references, prediction in cases:
        ours, theirs = rouge.score(references, prediction, use_stemmer), scorer.score_multi(references, prediction)
        assert largest_difference(ours, theirs) <= TOLERANCE, (references, prediction)
        assert rouge.score(tuple(references), prediction, use_stemmer) == ours  # a tuple, as Example.references


def test_empty_texts_and_no_references_score_zero_without_error():
    for references, prediction in [("", ""), ("a summary", ""), ("", "a summary"), ([], "a summary"), ("!!!", "?")]:
        scores = rouge.score(references, prediction)
        assert set(scores) == set(ROUGE_TYPES)
        assert all(tuple(s) == (0.0, 0.0, 0.0) for s in scores.values()), (references, prediction)


def test_non_text_input_names_the_problem():
    with pytest.raises(ValueError, match="strings; got NoneType"):
        rouge.score("a reference", None)

"""Corpus evaluation and its hook in every run (eval/evaluate.py: score_corpus, finish_run).

The oracle is rouge_score's `score_multi` on the same sentence-split texts, the way the Hugging Face
summarisation example feeds it; the corpus score must be the exact mean of those.
"""
import csv
import json
import math
from dataclasses import dataclass

import pytest
from rouge_score import rouge_scorer

from eval.evaluate import (LSUM_SENTENCE_NOTE, course_style, distinct_share, finish_run, repeats_a_phrase, score_corpus,
                           split_sentences, unpaired_scores)
from eval.rouge import ROUGE_TYPES, tokenize
from tests.conftest import DATA_DIR
from prompting.dialogsum import open_text, split_file


@dataclass(frozen=True)
class Example:
    """Stand-in for prompting.dialogsum.Example (same fields)."""

    id: str
    dialogue: str
    references: tuple
    topic: str = ""


def dialogsum_test(n: int) -> list[Example]:
    with open_text(split_file(DATA_DIR, "test")) as f:  # .jsonl or .jsonl.gz
        rows = [json.loads(line) for _, line in zip(range(n), f)]
    return [Example(r["fname"], r["dialogue"], (r["summary1"], r["summary2"], r["summary3"]), r["topic1"]) for r in rows]


def lead_predictions(examples) -> list[str]:
    """A crude summariser: the first two turns of the dialogue, speaker tags removed (several sentences each)."""
    return [" ".join(line.split(": ", 1)[-1] for line in ex.dialogue.split("\n")[:2]) for ex in examples]


EXAMPLES = dialogsum_test(60)
PREDICTIONS = lead_predictions(EXAMPLES)


def test_split_sentences_puts_sentences_on_lines_and_changes_only_whitespace():
    text = "Mr. Smith asks Dr. Lee about it. She agrees!  Is it done? Yes...  it is."
    assert split_sentences(text) == "Mr. Smith asks Dr. Lee about it.\nShe agrees!\nIs it done?\nYes...\nit is."
    for example in EXAMPLES:
        for text in (example.dialogue, *example.references):
            assert split_sentences(text).split() == text.split()
    assert split_sentences("") == "" and split_sentences("no full stop") == "no full stop"


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_corpus_scores_are_exact_means_of_score_multi_on_split_sentences(use_stemmer):
    corpus, per_example = score_corpus(EXAMPLES, PREDICTIONS, use_stemmer=use_stemmer)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    expected = [scorer.score_multi([split_sentences(r) for r in ex.references], split_sentences(pred))
                for ex, pred in zip(EXAMPLES, PREDICTIONS)]
    assert len(per_example) == len(EXAMPLES)
    for ours, theirs in zip(per_example, expected):
        for t in ROUGE_TYPES:
            assert abs(ours[t] - theirs[t].fmeasure) <= 1e-12
    for t in ROUGE_TYPES:
        assert corpus[t] == math.fsum(s[t].fmeasure for s in expected) / len(expected)
    assert set(corpus) == set(ROUGE_TYPES)  # no interval unless asked for


def test_sentence_split_changes_only_rouge_lsum():
    _, per_example = score_corpus(EXAMPLES, PREDICTIONS)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    for ours, ex, pred in zip(per_example, EXAMPLES, PREDICTIONS):
        unsplit = scorer.score_multi(list(ex.references), pred)
        for t in ("rouge1", "rouge2", "rougeL"):
            assert abs(ours[t] - unsplit[t].fmeasure) <= 1e-12
    # Without the split, Lsum would equal L on every example (no newlines anywhere): it must not.
    assert sum(row["rougeLsum"] != row["rougeL"] for row in per_example) > len(per_example) // 4


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    first, _ = score_corpus(EXAMPLES, PREDICTIONS, bootstrap=200, seed=3)
    again, _ = score_corpus(EXAMPLES, PREDICTIONS, bootstrap=200, seed=3)
    other, _ = score_corpus(EXAMPLES, PREDICTIONS, bootstrap=200, seed=4)
    assert first == again
    assert first != other
    for t in ROUGE_TYPES:
        assert first[f"{t}_low"] < first[t] < first[f"{t}_high"]


def test_empty_predictions_and_references_score_zero_without_error():
    examples = [Example("a", "x", ("",)), Example("b", "x", ("A summary.", "")), Example("c", "x", ("Hello there.",))]
    corpus, per_example = score_corpus(examples, ["", "", "..."])
    assert all(row[t] == 0.0 for row in per_example for t in ROUGE_TYPES)
    assert all(corpus[t] == 0.0 for t in ROUGE_TYPES)


def test_bad_corpus_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="2 examples but 1 predictions"):
        score_corpus(EXAMPLES[:2], PREDICTIONS[:1])
    with pytest.raises(ValueError, match="no examples to score"):
        score_corpus([], [])
    with pytest.raises(ValueError, match="bootstrap=-1"):
        score_corpus(EXAMPLES[:2], PREDICTIONS[:2], bootstrap=-1)


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_finish_run_writes_rouge_into_metrics_and_predictions(tmp_path, use_stemmer):
    examples, predictions = EXAMPLES[:8], PREDICTIONS[:8]
    info = {"model": "tiny", "mode": "zero-shot", "trainable_params": 0, "total_params": 10}
    returned = finish_run(tmp_path, examples, ["prompt"] * 8, predictions, info, use_stemmer=use_stemmer)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == returned
    corpus, per_example = score_corpus(examples, predictions, use_stemmer=use_stemmer)
    assert {t: metrics[t] for t in ROUGE_TYPES} == corpus
    assert metrics["use_stemmer"] is use_stemmer and metrics["rougeLsum_sentences"] == LSUM_SENTENCE_NOTE
    assert metrics["examples"] == 8 and metrics["model"] == "tiny" and metrics["total_params"] == 10
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["id"] for row in rows] == [ex.id for ex in examples]
    assert [row["prediction"] for row in rows] == predictions
    assert [row["reference_3"] for row in rows] == [ex.references[2] for ex in examples]
    for row, scores in zip(rows, per_example):
        assert {t: float(row[t]) for t in ROUGE_TYPES} == scores  # repr round-trips floats exactly


def test_stemmer_flag_changes_the_scores_where_stems_differ():
    examples = [Example("s", "x", ("They were running and jumping.",))]
    assert tokenize("running", True) != tokenize("running", False)
    on, _ = score_corpus(examples, ["He runs and jumps."], use_stemmer=True)
    off, _ = score_corpus(examples, ["He runs and jumps."], use_stemmer=False)
    assert on["rouge1"] > off["rouge1"]


def test_course_style_scores_each_reference_on_its_own_row_as_written():
    examples = dialogsum_test(3)
    predictions = [ex.references[1] for ex in examples]  # equal to one of the three references
    got = course_style(examples, predictions)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    rows = [scorer.score(ref, pred) for ex, pred in zip(examples, predictions) for ref in ex.references]
    assert got["rows"] == 9
    assert got["rouge1"] == pytest.approx(sum(r["rouge1"].fmeasure for r in rows) / 9, abs=1e-12)
    assert got["rougeL"] == pytest.approx(sum(r["rougeL"].fmeasure for r in rows) / 9, abs=1e-12)
    assert got["rouge1_low"] <= got["rouge1"] <= got["rouge1_high"]
    multi, _ = score_corpus(examples, predictions)
    assert multi["rouge1"] == pytest.approx(1.0) and got["rouge1"] < 1.0  # the best reference vs every reference


def test_repeated_phrases_mark_degenerate_summaries_and_human_ones_rarely_repeat():
    assert repeats_a_phrase("#Person1# tells #Person2#'s #Person2#'s #Person2#'s #Person2#'s story.")
    assert not repeats_a_phrase("#Person1# and #Person2# talk about the trip to Paris next week.")
    humans = [ref for ex in dialogsum_test(500) for ref in ex.references]
    assert sum(map(repeats_a_phrase, humans)) / len(humans) < 0.02


def test_a_summary_that_ignores_its_dialogue_owes_it_nothing():
    """The fine-tuned baby model once wrote 3 distinct summaries for 500 dialogues and scored ROUGE-1 28.6: a fixed
    text scores as well on any dialogue as on its own. The paired-minus-unpaired gap exposes it; a summary that is
    about its dialogue (here its first reference, scored multi-reference) keeps a wide gap."""
    constant = ["#Person1# tells #Person2# about the new job."] * len(EXAMPLES)
    paired, _ = score_corpus(EXAMPLES, constant)
    assert paired["rouge1"] > 0.1 and distinct_share(constant) == 1 / len(EXAMPLES)
    assert unpaired_scores(EXAMPLES, constant)["rouge1"] == pytest.approx(paired["rouge1"], abs=1e-12)
    own = [ex.references[0] for ex in EXAMPLES]
    assert distinct_share(own) > 0.95  # 59 of 60: two test dialogues share a first human summary
    assert score_corpus(EXAMPLES, own)[0]["rouge1"] - unpaired_scores(EXAMPLES, own)["rouge1"] > 0.5
    assert unpaired_scores(EXAMPLES[:1], own[:1]) == {}  # one dialogue has no other to be scored against

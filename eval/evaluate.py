"""Corpus ROUGE for a run, and the files every run writes, so every mode scores and writes the same way.

Two choices differ from Hugging Face `evaluate`'s "rouge", both deliberate (docs/NOTES.md, "ROUGE"): the corpus
score is the exact mean of the per-example F-measures, not the median of 1,000 unseeded bootstrap resamples (a
confidence interval is optional, from a seeded generator); and the stemmer is on by default, as in the course.

ROUGE-Lsum reads sentences as lines, and FLAN-T5 never writes a newline, so Lsum would equal ROUGE-L. The Hugging
Face summarisation example puts each sentence on its own line first (`nltk.sent_tokenize`); punkt's data cannot be
downloaded here, so `split_sentences` does it with a regex. Only whitespace changes: ROUGE-1, -2 and -L do not.

A run folder holds `predictions.csv` (id, dialogue, references, prediction, per-example ROUGE), `side_by_side.md`
(the first few prompts, human and model summaries) and `metrics.json` (the run's whole configuration, `as_record`,
its corpus scores and what it measured); `prepare_output_dir` refuses to write over another run's results.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

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
LSUM_AS_WRITTEN_NOTE = ("rougeLsum: texts scored as written, without a sentence split (as evaluate does); with no "
                        "newlines in them, ROUGE-Lsum equals ROUGE-L")


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


def course_style(examples, predictions: list[str], use_stemmer: bool = True) -> dict[str, float]:
    """The course notebook's score: each (dialogue, one human summary) pair its own row, the text as written, the
    mean over all rows (1,500 on DialogSum test), with the seeded 95% interval. Multi-reference scoring
    (`score_corpus`) takes the best of the references instead, and reads higher."""
    rows = [(SimpleNamespace(references=(ref,)), pred) for ex, pred in zip(examples, predictions)
            for ref in ex.references]
    corpus, _ = score_corpus([ex for ex, _ in rows], [pred for _, pred in rows], use_stemmer=use_stemmer,
                             bootstrap=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED, sentences=False)
    return {**corpus, "rows": len(rows)}


def repeats_a_phrase(text: str, n: int = 4) -> bool:
    """Degenerate output: some n words (ROUGE's tokens) come twice, as in "#Person1# tells #Person2#'s #Person2#'s
    ...". Human DialogSum summaries almost never do (tests/test_evaluate.py counts them)."""
    from eval.rouge import tokenize

    words = tokenize(text, use_stemmer=False)
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) < len(grams)


def distinct_share(predictions: list[str]) -> float:
    """Distinct summaries / summaries. A model that writes the same summary for every dialogue scores 1/n."""
    return len({p.strip() for p in predictions}) / len(predictions)


def unpaired_scores(examples, predictions: list[str], use_stemmer: bool = True, sentences: bool = True
                    ) -> dict[str, float]:
    """Mean ROUGE of each summary against the references of a dialogue it is NOT about: example i's prediction
    scored against example (i + n // 2) mod n's references (a fixed pairing; no example meets its own).

    ROUGE rewards words every DialogSum summary shares ("#Person1#", "tells", "the"), so a fixed text scores well
    above zero on every dialogue. The gap between the paired score and this one is what the summaries owe to their
    own dialogue; a gap near 0 means the model ignores its input, whatever its ROUGE."""
    n = len(examples)
    if n < 2:
        return {}
    others = [examples[(i + n // 2) % n] for i in range(n)]
    corpus, _ = score_corpus(others, predictions, use_stemmer=use_stemmer, sentences=sentences)
    return corpus


# ---- the run folder's files ---------------------------------------------------------------------------------------

RESULT_FILES = ("metrics.json", "predictions.csv")


def prepare_output_dir(path: str | os.PathLike, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the run folder; refuse to write over another run's results unless told to."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output-dir {out} is a file, not a folder")
    if out.is_dir() and not (overwrite or resume) and any((out / name).exists() for name in RESULT_FILES):
        raise ValueError(f"--output-dir {out} already holds a run's results; pass --overwrite or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    try:  # os.access says yes to root even on a read-only file system: write something to be sure
        (out / ".write_test").write_bytes(b"")
        (out / ".write_test").unlink()
    except OSError as err:
        raise PermissionError(f"--output-dir {out} is not writable ({err.strerror}); choose another folder") from err
    return out


def as_record(config) -> dict:
    """A run's configuration (a dataclass of dataclasses) as metrics.json holds it: every field, paths as text."""
    return json.loads(json.dumps(asdict(config), default=str))


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_predictions_csv(path: Path, examples, predictions, per_example: list[dict] | None = None) -> None:
    k = max((len(ex.references) for ex in examples), default=1)
    extra = list(per_example[0].keys()) if per_example else []
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "dialogue", *[f"reference_{i + 1}" for i in range(k)], "prediction", *extra])
        for i, (ex, pred) in enumerate(zip(examples, predictions)):
            refs = list(ex.references) + [""] * (k - len(ex.references))
            row_extra = [per_example[i][key] for key in extra] if per_example else []
            writer.writerow([ex.id, ex.dialogue, *refs, pred, *row_extra])


def write_side_by_side(path: Path, examples, prompts, predictions, title: str, count: int = 5) -> None:
    lines = [f"# {title}", ""]
    for ex, prompt, pred in list(zip(examples, prompts, predictions))[:count]:
        lines += [f"## {ex.id}", ""]
        if prompt:  # a file of predictions scored by --mode score may hold no prompt
            lines += ["**Prompt**", "", "```", prompt.rstrip(), "```", ""]
        lines += ["**Human summary**", "", ex.references[0], "", "**Model summary**", "", pred or "(empty)", "", "---", ""]
    path.write_text("\n".join(lines))


def finish_run(output_dir: Path, examples, prompts, predictions, info: dict, use_stemmer: bool = True,
               sentences: bool = True) -> dict:
    """Score the predictions, write the three files; return the metrics: `info`, the corpus scores with a seeded
    95% bootstrap interval ("rouge1_low", "rouge1_high", ...), the stemmer, how Lsum found sentences."""
    corpus, per_example = score_corpus(examples, predictions, use_stemmer=use_stemmer, sentences=sentences,
                                       bootstrap=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
    repeats = sum(repeats_a_phrase(p) for p in predictions) / len(predictions)
    multi = {"course_style": course_style(examples, predictions, use_stemmer)} if any(
        len(ex.references) > 1 for ex in examples) else {}
    metrics = {**info, "examples": len(examples), **corpus, **multi, "degenerate_share": round(repeats, 4),
               "distinct_share": round(distinct_share(predictions), 4),
               "unpaired": unpaired_scores(examples, predictions, use_stemmer, sentences),
               "use_stemmer": use_stemmer,
               "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "confidence": 0.95},
               "rougeLsum_sentences": LSUM_SENTENCE_NOTE if sentences else LSUM_AS_WRITTEN_NOTE,
               "output_dir": str(output_dir)}
    write_predictions_csv(output_dir / "predictions.csv", examples, predictions, per_example)
    write_side_by_side(output_dir / "side_by_side.md", examples, prompts, predictions, title=f"{info.get('mode', 'run')}: {info.get('model', '')}")
    write_json_atomic(output_dir / "metrics.json", metrics)
    return metrics


def plot_loss_curve(records: list[dict], png_path: Path, title: str = "") -> None:
    """A training run's `loss_curve.png`: the loss per step and the validation loss from its log's `records`, on one
    axis (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss (per step)", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy per label token")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)

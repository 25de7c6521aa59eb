"""Where a run's results go, and in which files, so every mode writes the same things the same way.

A run folder holds:
* `predictions.csv`: one row per dialogue: id, dialogue, reference_1..k, prediction (+ per-example ROUGE);
* `side_by_side.md`: the first few examples as prompt / human summary / model summary, for reading;
* `metrics.json`: corpus scores and what the run knows (model, mode, examples, parameters, time, memory, size).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from eval.evaluate import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, LSUM_SENTENCE_NOTE, score_corpus

LSUM_AS_WRITTEN_NOTE = ("rougeLsum: texts scored as written, without a sentence split (as evaluate does); with no "
                        "newlines in them, ROUGE-Lsum equals ROUGE-L")

RESULT_FILES = ("metrics.json", "predictions.csv")


def prepare_output_dir(path: str | os.PathLike, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the run folder; refuse to write over another run's results unless told to."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output-dir {out} is a file, not a folder")
    if out.is_dir() and not (overwrite or resume) and any((out / name).exists() for name in RESULT_FILES):
        raise ValueError(f"--output-dir {out} already holds a run's results; pass --overwrite or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise PermissionError(f"--output-dir {out} is not writable")
    return out


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
    """Score the predictions and write predictions.csv, side_by_side.md and metrics.json; return the metrics.

    metrics.json holds `info` (model, mode, parameters, time, memory, size: what the run knows), the number of
    examples, the corpus ROUGE F-measures as fractions with a seeded 95% bootstrap interval ("rouge1_low",
    "rouge1_high", ...), whether the stemmer was on, and how Lsum found sentences.
    """
    corpus, per_example = score_corpus(examples, predictions, use_stemmer=use_stemmer, sentences=sentences,
                                       bootstrap=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
    metrics = {**info, "examples": len(examples), **corpus, "use_stemmer": use_stemmer,
               "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "confidence": 0.95},
               "rougeLsum_sentences": LSUM_SENTENCE_NOTE if sentences else LSUM_AS_WRITTEN_NOTE,
               "output_dir": str(output_dir)}
    write_predictions_csv(output_dir / "predictions.csv", examples, predictions, per_example)
    write_side_by_side(output_dir / "side_by_side.md", examples, prompts, predictions, title=f"{info.get('mode', 'run')}: {info.get('model', '')}")
    write_json_atomic(output_dir / "metrics.json", metrics)
    return metrics

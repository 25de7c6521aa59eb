"""Where the tests find DialogSum and FLAN-T5's config and tokenizer, on any machine.

Each of the three is looked for in this order, and taken from the first place that has all its files:

1. the repository itself, which ships them: `data/dialogsum/` (gzipped) and `models/flan-t5-{small,base}/`
   (config and tokenizer, no weights), so a bare clone passes the suite offline;
2. the folder named by the environment variable `SHARED_DIR`;
3. `shared/` beside the repository's folder, the layout of this project's own machines;
4. the Hugging Face hub, downloaded once into its usual cache (`~/.cache/huggingface`, or `HF_HOME`):
   `google/flan-t5-small` and `google/flan-t5-base` without their weights (`snapshot_download` with
   `allow_patterns`: the config and tokenizer files only, about 3 MB each; the tests build the architecture with
   random weights), and the dataset `knkarthick/dialogsum` (its CSV files, about 15 MB), rewritten once into the
   official release's layout the tests read (`dialogsum.{train,dev,test}.jsonl`, test with `summary1..3`).

A folder for 1-3 holds `data/dialogsum/dialogsum.{train,dev,test}.jsonl` (or `.jsonl.gz`) and
`models/flan-t5-{small,base}/`.
When something is in none of the three places, `find` raises `Missing` with one message that says what is missing
where and what to set; conftest.py stops the whole run with it.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
DATA_FILES = ("dialogsum.train.jsonl", "dialogsum.dev.jsonl", "dialogsum.test.jsonl")
MODEL_FILES = ("config.json", "generation_config.json", "spiece.model", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json")
NEEDED_MODEL_FILES = ("config.json", "spiece.model", "tokenizer.json")  # what the tests open by name
HUB_MODELS = {"small": "google/flan-t5-small", "base": "google/flan-t5-base"}
HUB_DATA = "knkarthick/dialogsum"
SPLIT_FILES = {"train": "dialogsum.train.jsonl", "validation": "dialogsum.dev.jsonl", "test": "dialogsum.test.jsonl"}


@dataclass(frozen=True)
class Resources:
    data: Path    # DialogSum in the official layout
    small: Path   # flan-t5-small: config.json and tokenizer files
    base: Path    # flan-t5-base: the same


class Missing(Exception):
    """Some resource is in none of the places looked at; the message says what to set."""


def local_roots(env: dict, repo: Path) -> list[tuple[str, Path]]:
    roots = [(f"{repo} (the repository)", repo)]
    roots += [("SHARED_DIR=" + env["SHARED_DIR"], Path(env["SHARED_DIR"]))] if env.get("SHARED_DIR") else []
    return roots + [(f"{repo.parent / 'shared'} (beside the repository)", repo.parent / "shared")]


def has_all(folder: Path, names) -> bool:
    """Every file is there, as named or gzipped (`name.gz`: the loaders read both)."""
    return all((folder / name).is_file() or (folder / f"{name}.gz").is_file() for name in names)


def find(env: dict | None = None, repo: Path = REPO, download: Callable | None = None,
         cache: Path | None = None) -> Resources:
    """The three resources, each from the first place that has it (the order in the module docstring).
    `download` stands for `huggingface_hub.snapshot_download` (tests pass a fake); `cache` is where the dataset is
    rewritten in the official layout (default: beside the hub's cache)."""
    env = os.environ if env is None else env
    wanted = {"data": (Path("data/dialogsum"), DATA_FILES), "small": (Path("models/flan-t5-small"), NEEDED_MODEL_FILES),
              "base": (Path("models/flan-t5-base"), NEEDED_MODEL_FILES)}
    found: dict[str, Path] = {}
    for key, (relative, names) in wanted.items():
        for _, root in local_roots(env, repo):
            if has_all(root / relative, names):
                found[key] = root / relative
                break
    missing = [key for key in wanted if key not in found]
    hub_errors = {}
    for key in missing:
        try:
            found[key] = (from_hub_dataset(download, cache) if key == "data" else
                          from_hub_model(HUB_MODELS[key], download))
        except Exception as err:  # offline, refused, a file missing on the hub: all reported in one message below
            hub_errors[key] = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:160]}"
    if hub_errors:
        raise Missing(message(hub_errors, wanted, env, repo))
    return Resources(found["data"], found["small"], found["base"])


def message(hub_errors: dict, wanted: dict, env: dict, repo: Path) -> str:
    names = {"data": f"DialogSum ({', '.join(DATA_FILES)})", "small": "flan-t5-small's config and tokenizer",
             "base": "flan-t5-base's config and tokenizer"}
    hub = {"data": HUB_DATA, **HUB_MODELS}
    lines = ["The tests need DialogSum and FLAN-T5's config and tokenizer files, and could not find "
             + ", ".join(names[key] for key in hub_errors) + ". Looked in:"]
    for label, root in local_roots(env, repo):
        lines.append(f"  {label}: " + ("does not exist" if not root.is_dir() else
                                       "has no complete " + ", ".join(f"{wanted[key][0]}/" for key in hub_errors)))
    lines.append("  the Hugging Face hub: " + "; ".join(f"{hub[key]}: {why}" for key, why in hub_errors.items()))
    lines.append("Set SHARED_DIR to a folder holding data/dialogsum/dialogsum.{train,dev,test}.jsonl and "
                 "models/flan-t5-{small,base}/ (config.json, spiece.model, tokenizer.json), or run the tests once "
                 "where huggingface.co can be reached (they download about 20 MB into the hub's cache, "
                 "and unset HF_HUB_OFFLINE for that run).")
    return "\n".join(lines)


def snapshot_download(*args, **kwargs) -> str:
    from huggingface_hub import snapshot_download as download

    return download(*args, **kwargs)


def from_hub_model(repo_id: str, download: Callable | None) -> Path:
    folder = Path((download or snapshot_download)(repo_id, allow_patterns=list(MODEL_FILES)))
    if not has_all(folder, NEEDED_MODEL_FILES):
        raise FileNotFoundError(f"{repo_id} gave no {', '.join(NEEDED_MODEL_FILES)}")
    return folder


def from_hub_dataset(download: Callable | None, cache: Path | None) -> Path:
    """knkarthick/dialogsum's CSV files, rewritten once into the official layout with the project's own loader
    (which folds the hub's three rows per test dialogue back into one example with three summaries)."""
    from prompting.dialogsum import load_split

    if cache is None:
        from huggingface_hub import constants

        cache = Path(constants.HF_HOME) / "flan-t5-lora-tests"
    target = cache / "dialogsum"
    if has_all(target, DATA_FILES):
        return target
    snapshot = Path((download or snapshot_download)(HUB_DATA, repo_type="dataset", allow_patterns=["*.csv"]))
    partial = cache / "dialogsum.partial"
    shutil.rmtree(partial, ignore_errors=True)  # only ever this function's own unfinished output
    partial.mkdir(parents=True)
    for split, name in SPLIT_FILES.items():
        with open(partial / name, "w", encoding="utf-8") as f:
            for ex in load_split(str(snapshot), split):
                refs = ({"summary": ex.references[0]} if len(ex.references) == 1 else
                        {f"summary{i}": ref for i, ref in enumerate(ex.references, start=1)})
                topic = {"topic": ex.topic} if len(ex.references) == 1 else {"topic1": ex.topic}
                f.write(json.dumps({"fname": ex.id, "dialogue": ex.dialogue, **refs, **topic}) + "\n")
    shutil.rmtree(target, ignore_errors=True)  # an incomplete copy of this function's own
    os.replace(partial, target)  # the folder appears whole, or not at all
    return target

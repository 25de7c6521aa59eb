"""Prompts that fit the model's input budget, counted with the real tokenizer.

The zero-shot template is the course notebook's (DeepLearning.AI's "Generative AI with LLMs" labs; docs/NOTES.md,
"Prompts"); fine-tuning uses it too, so a fine-tuned model is asked exactly what it was trained on. Newlines and
repeated spaces do not survive T5's tokenizer (they collapse to one space): the line breaks are for the human
reading the side-by-side tables. One- and few-shot prompts (shots.py) are for the prompting modes.

FLAN-T5 reads at most 512 tokens (T5 was trained on 512-token inputs, Raffel et al. 2020). The course notebook lets
the tokenizer cut the end off, which removes the question, the one part the model must see. Here a dialogue too
long for its template is cut *inside* the template, so the question ("Summary:") always survives; every cut is
counted in `PromptStats`.

`--prompt "...{dialogue}..."` replaces the course's template with the user's (`check_template`: exactly one
`{dialogue}`), for training, zero-shot and summarising alike; a training run saves it beside its adapter or model
(`save_template`, `prompt.json`), and `--adapter` or `--model` on that folder reads it back (`saved_template`).
One- and few-shot keep FLAN's templates (shots.py).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from prompting.dialogsum import Example


COURSE_TEMPLATE = "Summarize the following conversation.\n\n{dialogue}\n\nSummary: "
SLOT = "{dialogue}"
TEMPLATE_FILE = "prompt.json"  # saved beside an adapter or model: the template it was trained with


def zero_shot_prompt(dialogue: str, template: str = COURSE_TEMPLATE) -> str:
    """The template with the dialogue in its slot (a plain replace: other braces in a template are text)."""
    return template.replace(SLOT, dialogue)


def check_template(template: str, flag: str = "--prompt") -> str:
    """A template holds `{dialogue}` exactly once: none would summarise nothing, two would show the dialogue twice."""
    count = template.count(SLOT)
    if count != 1:
        raise ValueError(f"{flag} {template!r}: holds {SLOT} {count} times; write it exactly once, where the "
                         f"dialogue goes, e.g. --prompt 'Summarise this chat: {SLOT} Summary:'")
    return template


def save_template(folder: str | os.PathLike, template: str) -> None:
    (Path(folder) / TEMPLATE_FILE).write_text(json.dumps({"template": template}, indent=2) + "\n")


def saved_template(folder: str | os.PathLike | None) -> str | None:
    """The template saved in `folder` (an adapter or model a training run wrote), or None when it holds none."""
    path = Path(folder) / TEMPLATE_FILE if folder else None
    if path is None or not path.is_file():
        return None
    try:
        return check_template(json.loads(path.read_text())["template"], flag=str(path))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a saved prompt ({err}); expected {{\"template\": \"...{SLOT}...\"}}") from None


def choose_template(given: str | None, *folders: str | os.PathLike | None) -> tuple[str, str]:
    """(template, where it came from): --prompt when given, else the one saved with the first of `folders` (the
    adapter, then the model) that holds one, else the course's."""
    if given is not None:
        return check_template(given), "--prompt"
    for folder in folders:
        saved = saved_template(folder)
        if saved is not None:
            return saved, str(Path(folder) / TEMPLATE_FILE)
    return COURSE_TEMPLATE, "the course's template"


@dataclass
class PromptStats:
    shots_requested: int = 0  # per prompt
    shots_used: int = 0  # over all prompts
    shots_dropped: int = 0
    shots_truncated: int = 0
    dialogues_truncated: int = 0
    prompts_without_shots: int = 0  # shots were asked for, none fitted
    lengths: list[int] = field(default_factory=list)  # tokens per final prompt, </s> included

    def as_dict(self) -> dict:
        """The counts, and the prompts' lengths as mean, 95th percentile (nearest rank) and maximum."""
        lengths = sorted(self.lengths) or [0]
        return {"prompts": len(self.lengths), **{k: v for k, v in asdict(self).items() if k != "lengths"},
                "prompt_tokens_mean": round(sum(lengths) / len(lengths), 1),
                "prompt_tokens_p95": lengths[math.ceil(0.95 * len(lengths)) - 1], "prompt_tokens_max": lengths[-1]}


@dataclass
class PromptSet:
    prompts: list[str]
    shot_ids: list[tuple[str, ...]]  # the train examples each prompt shows, after any were dropped
    stats: PromptStats


class TokenBudget:
    """Counts and cuts text in tokens of the real tokenizer (a fast one: cutting needs character offsets)."""

    def __init__(self, tokenizer, max_tokens: int):
        if max_tokens <= 0:
            raise ValueError(f"--max-input-tokens must be positive, got {max_tokens}")
        self.tokenizer, self.max_tokens = tokenizer, max_tokens

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, verbose=False).input_ids)  # with </s>, as the model will see it

    def count_bare(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False).input_ids)

    def cut(self, text: str, n_tokens: int) -> str:
        """The longest prefix of `text` that holds its first `n_tokens` tokens, original spacing kept."""
        if n_tokens <= 0:
            return ""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc.offset_mapping  # (start, end) character span of each token
        return text if n_tokens >= len(offsets) else text[: offsets[n_tokens - 1][1]]


def build_prompts(examples: Sequence[Example], tokenizer, shots: int = 0, train: Sequence[Example] | None = None,
                  seed: int = 42, max_tokens: int = 512, template: str = COURSE_TEMPLATE) -> PromptSet:
    """Prompts for the dialogues of `examples`: `template` (the course's zero-shot one, or --prompt) when
    `shots == 0`, else FLAN's template with `shots` examples drawn from `train` (shots.py)."""
    budget = TokenBudget(tokenizer, max_tokens)
    stats = PromptStats(shots_requested=shots)
    if shots < 0:
        raise ValueError(f"--shots must be 0 or more, got {shots}")
    if shots:
        from prompting.shots import check_shots, few_shot_prompt  # only the prompting modes draw shots

        train = check_shots(examples, train, shots)
    prompts, shot_ids = [], []
    for example in examples:
        if shots:
            prompt, kept = few_shot_prompt(example, train, shots, seed, budget, stats)
        else:
            prompt, kept = fit_dialogue(example.dialogue, partial(zero_shot_prompt, template=template), budget,
                                        stats), ()
        prompts.append(prompt)
        shot_ids.append(kept)
        stats.lengths.append(budget.count(prompt))
    return PromptSet(prompts, shot_ids, stats)


def fit_dialogue(dialogue: str, template: Callable[[str], str], budget: TokenBudget, stats: PromptStats) -> str:
    """The prompt `template(dialogue)`, the dialogue cut inside the template only when the prompt does not fit."""
    over = budget.count(template(dialogue)) - budget.max_tokens
    if over <= 0:
        return template(dialogue)
    stats.dialogues_truncated += 1
    length = budget.count_bare(dialogue)
    while over > 0:
        if length - over <= 0:
            raise ValueError(f"--max-input-tokens {budget.max_tokens} leaves no room for the dialogue in the prompt")
        dialogue = budget.cut(dialogue, length - over)
        length = min(length - 1, budget.count_bare(dialogue))
        over = budget.count(template(dialogue)) - budget.max_tokens
    return template(dialogue)

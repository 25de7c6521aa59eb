"""Prompts that fit the model's input budget, counted with the real tokenizer.

The zero-shot template is the course notebook's (DeepLearning.AI's "Generative AI with LLMs" labs; docs/NOTES.md,
"Prompts"); fine-tuning uses it too, so a fine-tuned model is asked exactly what it was trained on. Newlines and
repeated spaces do not survive T5's tokenizer (they collapse to one space): the line breaks are for the human
reading the side-by-side tables. One- and few-shot prompts (shots.py) are for the prompting modes.

FLAN-T5 reads at most 512 tokens (T5 was trained on 512-token inputs, Raffel et al. 2020). The course notebook lets
the tokenizer cut the end off, which removes the question, the one part the model must see. Here a dialogue too
long for its template is cut *inside* the template, so the question ("Summary:") always survives; every cut is
counted in `PromptStats`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from prompting.dialogsum import Example


def zero_shot_prompt(dialogue: str) -> str:
    return f"Summarize the following conversation.\n\n{dialogue}\n\nSummary: "


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
                  seed: int = 42, max_tokens: int = 512) -> PromptSet:
    """Prompts for the dialogues of `examples`: the zero-shot template when `shots == 0`, else FLAN's template with `shots` examples
    drawn from `train` (shots.py)."""
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
            prompt, kept = fit_dialogue(example.dialogue, zero_shot_prompt, budget, stats), ()
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

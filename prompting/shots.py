"""One- and few-shot prompts: FLAN's own dialogue-summary template ("What was going on?"), whose shots are solved
examples from the train split, cut to fit the budget in this order:

1. drop shots, longest first, while even cutting the longest shot down to `MIN_SHOT_DIALOGUE_TOKENS` would not fit;
2. then cut the dialogue of the longest remaining shot (its summary stays whole: it is the example's answer);
3. the dialogue to summarise is cut only when it alone, in its template, exceeds the budget (prompts.py, `fit_dialogue`).

Shots are drawn by a RNG seeded with (seed, dialogue id): a dialogue gets the same shots however many other dialogues
are evaluated alongside it.
"""
from __future__ import annotations

import random
from typing import Sequence

from prompting.dialogsum import Example
from prompting.prompts import PromptStats, TokenBudget, fit_dialogue


def flan_shot(dialogue: str, summary: str) -> str:
    """A solved example: the dialogue, FLAN's question, the human summary."""
    return f"\nDialogue:\n\n{dialogue}\n\nWhat was going on?\n{summary}\n\n\n"


def flan_query(dialogue: str) -> str:
    """The dialogue to summarise, ending where the model's summary should begin."""
    return f"\nDialogue:\n\n{dialogue}\n\nWhat was going on?\n"


def flan_dialogue_prompt(shots: Sequence[tuple[str, str]], dialogue: str) -> str:
    """Shots as (dialogue, summary) pairs, then the dialogue to summarise."""
    return "".join(flan_shot(d, s) for d, s in shots) + flan_query(dialogue)


# A shot cut shorter than this shows too little of a conversation for its summary to make sense: drop it instead.
MIN_SHOT_DIALOGUE_TOKENS = 64


def choose_shots(example: Example, train: Sequence[Example], k: int, seed: int) -> list[Example]:
    rng = random.Random(f"{seed}:{example.id}")  # str seeds are hashed with sha512: the same on every run
    return [train[i] for i in rng.sample(range(len(train)), k)]


def check_shots(evaluated: Sequence[Example], train: Sequence[Example] | None, shots: int) -> list[Example]:
    train = list(train or [])
    if shots > len(train):
        raise ValueError(f"--shots {shots}: only {len(train)} train dialogues are available to draw shots from")
    if {e.dialogue for e in evaluated} & {e.dialogue for e in train}:
        raise ValueError("shots must come from another split than the one evaluated; evaluate on validation or test")
    return train


def few_shot_prompt(example: Example, train: Sequence[Example], shots: int, seed: int, budget: TokenBudget,
                    stats: PromptStats) -> tuple[str, tuple[str, ...]]:
    """The prompt for `example`'s dialogue with its shots, and the ids of the shots that fitted."""
    kept = fit_shots(example.dialogue, choose_shots(example, train, shots, seed), budget, stats)
    pairs = [(dialogue, ex.references[0]) for ex, dialogue in kept]
    prompt = fit_dialogue(example.dialogue, lambda d: flan_dialogue_prompt(pairs, d), budget, stats)
    stats.shots_used += len(kept)
    stats.prompts_without_shots += not kept
    return prompt, tuple(ex.id for ex, _ in kept)


def fit_shots(dialogue: str, chosen: list[Example], budget: TokenBudget, stats: PromptStats) -> list[tuple[Example, str]]:
    """Steps 1 and 2: the shots (example, its dialogue, maybe cut) that fit beside the whole `dialogue` to summarise."""
    kept = [(ex, ex.dialogue) for ex in chosen]
    lengths = [budget.count_bare(ex.dialogue) for ex in chosen]
    truncated: set[str] = set()
    while kept:
        over = budget.count(flan_dialogue_prompt([(d, ex.references[0]) for ex, d in kept], dialogue)) - budget.max_tokens
        if over <= 0:
            break
        i = max(range(len(kept)), key=lambda j: lengths[j])
        ex, shot_dialogue = kept[i]
        if lengths[i] - over >= MIN_SHOT_DIALOGUE_TOKENS:
            kept[i] = (ex, budget.cut(shot_dialogue, lengths[i] - over))
            lengths[i] = min(lengths[i] - 1, budget.count_bare(kept[i][1]))  # always progress
            truncated.add(ex.id)
        else:
            del kept[i], lengths[i]
            stats.shots_dropped += 1
            truncated.discard(ex.id)
    stats.shots_truncated += len(truncated)
    return kept

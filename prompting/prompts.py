"""Zero-, one- and few-shot prompts that fit the model's input budget, counted with the real tokenizer.

The two templates are the course notebook's (DeepLearning.AI's "Generative AI with LLMs" labs; docs/NOTES.md,
"Prompts"): `zero_shot_prompt` (an instruction, the dialogue, "Summary: "; fine-tuning uses it too, so a
fine-tuned model is asked exactly what it was trained on) and one of FLAN's own dialogue-summary templates,
`flan_dialogue_prompt` ("What was going on?"), whose shots are solved examples. Newlines and repeated spaces do
not survive T5's tokenizer (they collapse to one space): the line breaks are for the human reading the
side-by-side tables, not for the model.

FLAN-T5 reads at most 512 tokens (T5 was trained on 512-token inputs, Raffel et al. 2020, arXiv:1910.10683).
The course notebook builds a few-shot prompt from three dialogues plus the target and lets the tokenizer cut
the end off, which removes the target's question, the one part the model must see. Here every prompt is
assembled, counted and, when too long, cut in this order:

1. drop shots, longest first, while even cutting the longest shot down to `MIN_SHOT_DIALOGUE_TOKENS` would not fit;
2. then cut the dialogue of the longest remaining shot (its summary stays whole: it is the example's answer);
3. the target dialogue is cut only when it alone, in its template, exceeds the budget. It is cut inside the
   template, so the question at the end ("Summary:", "What was going on?") always survives.

Every cut is counted in `PromptStats`. Shots come from the train split only, drawn by a RNG seeded with
(seed, target id): a target gets the same shots however many other dialogues are evaluated alongside it.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

from prompting.dialogsum import Example


def zero_shot_prompt(dialogue: str) -> str:
    return f"Summarize the following conversation.\n\n{dialogue}\n\nSummary: "


def flan_shot(dialogue: str, summary: str) -> str:
    """A solved example: the dialogue, FLAN's question, the human summary."""
    return f"\nDialogue:\n\n{dialogue}\n\nWhat was going on?\n{summary}\n\n\n"


def flan_target(dialogue: str) -> str:
    """The dialogue to summarise, ending where the model's summary should begin."""
    return f"\nDialogue:\n\n{dialogue}\n\nWhat was going on?\n"


def flan_dialogue_prompt(shots: Sequence[tuple[str, str]], dialogue: str) -> str:
    """Shots as (dialogue, summary) pairs, then the target dialogue."""
    return "".join(flan_shot(d, s) for d, s in shots) + flan_target(dialogue)


# A shot cut shorter than this shows too little of a conversation for its summary to make sense: drop it instead.
MIN_SHOT_DIALOGUE_TOKENS = 64


@dataclass
class PromptStats:
    shots_requested: int = 0  # per prompt
    shots_used: int = 0  # over all prompts
    shots_dropped: int = 0
    shots_truncated: int = 0
    targets_truncated: int = 0
    prompts_without_shots: int = 0  # shots were asked for, none fitted
    lengths: list[int] = field(default_factory=list)  # tokens per final prompt, </s> included

    def as_dict(self) -> dict:
        lengths = sorted(self.lengths) or [0]
        return {
            "prompts": len(self.lengths), "shots_requested": self.shots_requested, "shots_used": self.shots_used,
            "shots_dropped": self.shots_dropped, "shots_truncated": self.shots_truncated,
            "targets_truncated": self.targets_truncated, "prompts_without_shots": self.prompts_without_shots,
            "prompt_tokens_mean": round(sum(lengths) / len(lengths), 1),
            "prompt_tokens_p95": lengths[math.ceil(0.95 * len(lengths)) - 1],  # nearest rank
            "prompt_tokens_max": lengths[-1],
        }


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


def choose_shots(target: Example, train: Sequence[Example], k: int, seed: int) -> list[Example]:
    rng = random.Random(f"{seed}:{target.id}")  # str seeds are hashed with sha512: the same on every run
    return [train[i] for i in rng.sample(range(len(train)), k)]


def build_prompts(targets: Sequence[Example], tokenizer, shots: int = 0, train: Sequence[Example] | None = None,
                  seed: int = 42, max_tokens: int = 512) -> PromptSet:
    """Prompts for `targets`: the zero-shot template when `shots == 0`, else FLAN's template with `shots` examples."""
    budget = TokenBudget(tokenizer, max_tokens)
    stats = PromptStats(shots_requested=shots)
    if shots < 0:
        raise ValueError(f"--shots must be 0 or more, got {shots}")
    if shots > 0:
        train = list(train or [])
        if shots > len(train):
            raise ValueError(f"--shots {shots}: only {len(train)} train dialogues are available to draw shots from")
        if {t.dialogue for t in targets} & {e.dialogue for e in train}:
            raise ValueError("shots must come from another split than the one evaluated; evaluate on validation or test")
    prompts, shot_ids = [], []
    for target in targets:
        if shots == 0:
            prompt, kept = fit_target(target.dialogue, zero_shot_prompt, budget, stats), []
        else:
            kept = fit_shots(target.dialogue, choose_shots(target, train, shots, seed), budget, stats)
            pairs = [(dialogue, ex.references[0]) for ex, dialogue in kept]
            prompt = fit_target(target.dialogue, lambda d: flan_dialogue_prompt(pairs, d), budget, stats)
            stats.shots_used += len(kept)
            stats.prompts_without_shots += not kept
        prompts.append(prompt)
        shot_ids.append(tuple(ex.id for ex, _ in kept))
        stats.lengths.append(budget.count(prompt))
    return PromptSet(prompts, shot_ids, stats)


def fit_shots(target: str, chosen: list[Example], budget: TokenBudget, stats: PromptStats) -> list[tuple[Example, str]]:
    """Steps 1 and 2: the shots (example, its dialogue, maybe cut) that fit beside the whole target dialogue."""
    kept = [(ex, ex.dialogue) for ex in chosen]
    lengths = [budget.count_bare(ex.dialogue) for ex in chosen]
    truncated: set[str] = set()
    while kept:
        over = budget.count(flan_dialogue_prompt([(d, ex.references[0]) for ex, d in kept], target)) - budget.max_tokens
        if over <= 0:
            break
        i = max(range(len(kept)), key=lambda j: lengths[j])
        ex, dialogue = kept[i]
        if lengths[i] - over >= MIN_SHOT_DIALOGUE_TOKENS:
            kept[i] = (ex, budget.cut(dialogue, lengths[i] - over))
            lengths[i] = min(lengths[i] - 1, budget.count_bare(kept[i][1]))  # always progress
            truncated.add(ex.id)
        else:
            del kept[i], lengths[i]
            stats.shots_dropped += 1
            truncated.discard(ex.id)
    stats.shots_truncated += len(truncated)
    return kept


def fit_target(dialogue: str, template: Callable[[str], str], budget: TokenBudget, stats: PromptStats) -> str:
    """Step 3: cut the target dialogue inside its template only when the prompt does not fit."""
    over = budget.count(template(dialogue)) - budget.max_tokens
    if over <= 0:
        return template(dialogue)
    stats.targets_truncated += 1
    length = budget.count_bare(dialogue)
    while over > 0:
        if length - over <= 0:
            raise ValueError(f"--max-input-tokens {budget.max_tokens} leaves no room for the dialogue in the prompt")
        dialogue = budget.cut(dialogue, length - over)
        length = min(length - 1, budget.count_bare(dialogue))
        over = budget.count(template(dialogue)) - budget.max_tokens
    return template(dialogue)

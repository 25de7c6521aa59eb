"""Dialogue/summary pairs as token ids for training: inputs of at most 512 tokens, targets of at most 128.

The input is the zero-shot prompt (prompting/templates.py), so the fine-tuned model is asked at test time exactly
what it learnt to answer. 260 of the 12,460 training dialogues do not fit 512 tokens with the prompt
(tests/test_batching.py). Cutting the token ids at 512, as the course notebook does, cuts off "Summary:" too;
here the dialogue is cut inside the template (prompting/prompts.py, `fit_target`) so the question survives.

Nothing is padded here: padding belongs to the batch (train_loop/batching.py, `collate`), where labels are padded
with -100, the index the loss ignores (`CrossEntropyLoss`'s `ignore_index`). Padding labels with 0 teaches the
model to emit <pad>.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from prompting.dialogsum import Example
from prompting.prompts import PromptStats, TokenBudget, fit_target
from prompting.templates import zero_shot_prompt


@dataclass
class EncodedData:
    input_ids: list[list[int]]  # one list per example, ends with </s>, no padding
    labels: list[list[int]]  # the summary's ids, ends with </s>, no padding
    truncated_inputs: int  # examples whose dialogue was cut to fit max_input_tokens
    truncated_targets: int  # examples whose summary was cut to max_target_tokens

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def input_lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    @property
    def label_lengths(self) -> list[int]:
        return [len(ids) for ids in self.labels]


def encode_for_training(examples: Sequence[Example], tokenizer, max_input_tokens: int = 512,
                        max_target_tokens: int = 128) -> EncodedData:
    """Tokenise (zero-shot prompt, first reference) pairs; count what had to be cut."""
    if max_input_tokens <= 0 or max_target_tokens <= 1:
        raise ValueError(f"token limits must leave room for text and </s>: got --max-input-tokens "
                         f"{max_input_tokens}, --max-target-tokens {max_target_tokens}")
    # One batched call for all of them (the fast tokenizer runs the batch in Rust); refit only the few too long.
    input_ids = tokenizer([zero_shot_prompt(ex.dialogue) for ex in examples], verbose=False).input_ids
    budget, stats = TokenBudget(tokenizer, max_input_tokens), PromptStats()
    for i, ids in enumerate(input_ids):
        if len(ids) > max_input_tokens:
            input_ids[i] = tokenizer(fit_target(examples[i].dialogue, zero_shot_prompt, budget, stats)).input_ids

    labels = tokenizer([ex.references[0] for ex in examples], verbose=False).input_ids
    truncated_targets = 0
    for i, ids in enumerate(labels):
        if len(ids) > max_target_tokens:
            labels[i] = ids[: max_target_tokens - 1] + [tokenizer.eos_token_id]  # keep </s>: the model learns to stop
            truncated_targets += 1
    return EncodedData(input_ids, labels, stats.targets_truncated, truncated_targets)

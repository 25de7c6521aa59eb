"""The pretraining data stream: for every train dialogue, each epoch, one span-corruption example of its text
(span_corruption.py) and one instruction about it (instructions.py), batched as fine-tuning batches are
(train_loop/data.py: length-grouped, padded per batch, labels padded with IGNORE_INDEX).

Two rules keep the study honest, and tests/test_pretrain_data.py pins both: the stream is built from `Text`s,
which carry a dialogue and its topic and nothing else, so no summary of any split can enter it; and the runner
makes them from the train split only, so no validation or test dialogue is ever seen before the evaluation.

Every epoch draws new spans and new questions (seeded by `seed` and the epoch, so a resumed run sees the same
ones); the number of examples, and so of batches, is the same every epoch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from pretrain.instructions import instruction
from pretrain.span_corruption import corrupt
from train_loop.data import collate, length_grouped_batches


@dataclass(frozen=True)
class Text:
    """What pretraining may read of a dialogue: the dialogue and its topic; never a summary."""
    dialogue: str
    topic: str


def cut(ids: list[int], limit: int, eos_id: int) -> list[int]:
    """At most `limit` ids, still ending with </s>."""
    return ids if len(ids) <= limit else ids[: limit - 1] + [eos_id]


def epoch_examples(texts: Sequence[Text], dialogue_ids: list[list[int]], tokenizer, seed: int, epoch: int,
                   max_input_tokens: int, max_label_tokens: int) -> tuple[list[list[int]], list[list[int]]]:
    """(input ids, label ids) of one epoch: 2 examples per text, span corruption first."""
    rng = np.random.default_rng([seed, epoch])
    eos = tokenizer.eos_token_id
    pairs = [corrupt(ids[: max_input_tokens - 1], rng, eos) for ids in dialogue_ids]
    asked = [instruction(t.dialogue, t.topic, rng) for t in texts]
    prompts = tokenizer([q for q, _ in asked], verbose=False).input_ids
    answers = tokenizer([a for _, a in asked], verbose=False).input_ids
    inputs = [i for i, _ in pairs] + [cut(ids, max_input_tokens, eos) for ids in prompts]
    labels = [t for _, t in pairs] + [cut(ids, max_label_tokens, eos) for ids in answers]
    return inputs, [cut(ids, max_label_tokens, eos) for ids in labels]


def pretraining_batches(texts: Sequence[Text], tokenizer, batch_size: int, seed: int, max_input_tokens: int = 512,
                        max_label_tokens: int = 128) -> Callable[[int], list[dict]]:
    """A function epoch -> collated batches of that epoch's examples: what `train_loop.loop.train` takes."""
    if not texts:
        raise ValueError("pretraining needs at least one train dialogue")
    dialogue_ids = [ids[:-1] for ids in tokenizer([t.dialogue for t in texts], verbose=False).input_ids]  # no </s>

    def batches_for_epoch(epoch: int) -> list[dict]:
        inputs, labels = epoch_examples(texts, dialogue_ids, tokenizer, seed, epoch, max_input_tokens,
                                        max_label_tokens)
        groups = length_grouped_batches([len(ids) for ids in inputs], batch_size, seed=seed, epoch=epoch)
        return [collate([inputs[i] for i in g], [labels[i] for i in g], pad_id=tokenizer.pad_token_id)
                for g in groups]
    return batches_for_epoch

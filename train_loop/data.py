"""Training data: dialogue/summary pairs as token ids, then batches of similar length padded only as far as needed.

**Tokens.** The input is the zero-shot prompt (prompting/prompts.py), so the fine-tuned model is asked at test time
what it learnt to answer; the labels are the first human summary. 260 of the 12,460 training dialogues do not fit
512 tokens; cutting the ids at 512, as the course notebook does, cuts off "Summary:" too, so the dialogue is cut
inside the template instead (`fit_dialogue`). A summary longer than 128 tokens keeps its `</s>`.

**Batches.** Padding every example to 512 + 128 tokens, as the course notebook does, makes 58% of DialogSum train's
tokens padding (tests/test_batching.py). So `collate` pads each batch to its own longest example (labels with
IGNORE_INDEX, which the loss skips; padding them with 0 would teach the model to emit <pad>), and
`length_grouped_batches` shuffles, sorts within large random pools, cuts them into batches and shuffles the batches:
transformers' `LengthGroupedSampler` "megabatch" idea, written out (sorting the whole set would repeat every epoch).
With several processes each takes `batch[rank::world_size]` of every global batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch

from prompting.dialogsum import Example
from prompting.prompts import COURSE_TEMPLATE, PromptStats, TokenBudget, fit_dialogue, zero_shot_prompt

IGNORE_INDEX = -100  # the label torch's cross-entropy (and transformers' T5) skips


@dataclass
class EncodedData:
    input_ids: list[list[int]]  # one list per example, ends with </s>, no padding
    labels: list[list[int]]  # the summary's ids, ends with </s>, no padding
    truncated_dialogues: int  # examples whose dialogue was cut to fit max_input_tokens
    truncated_summaries: int  # examples whose summary was cut to max_label_tokens

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def input_lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    @property
    def label_lengths(self) -> list[int]:
        return [len(ids) for ids in self.labels]


def encode_for_training(examples: Sequence[Example], tokenizer, max_input_tokens: int = 512,
                        max_label_tokens: int = 128, template: str = COURSE_TEMPLATE) -> EncodedData:
    """Tokenise (zero-shot prompt in `template`, first reference) pairs; count what had to be cut."""
    if max_input_tokens <= 0 or max_label_tokens <= 1:
        raise ValueError(f"token limits must leave room for text and </s>: got --max-input-tokens "
                         f"{max_input_tokens}, --max-target-tokens {max_label_tokens}")
    # One batched call for all of them (the fast tokenizer runs the batch in Rust); refit only the few too long.
    prompt = partial(zero_shot_prompt, template=template)
    input_ids = tokenizer([prompt(ex.dialogue) for ex in examples], verbose=False).input_ids
    budget, stats = TokenBudget(tokenizer, max_input_tokens), PromptStats()
    for i, ids in enumerate(input_ids):
        if len(ids) > max_input_tokens:
            input_ids[i] = tokenizer(fit_dialogue(examples[i].dialogue, prompt, budget, stats)).input_ids
    labels = tokenizer([ex.references[0] for ex in examples], verbose=False).input_ids
    truncated_summaries = 0
    for i, ids in enumerate(labels):
        if len(ids) > max_label_tokens:
            labels[i] = ids[: max_label_tokens - 1] + [tokenizer.eos_token_id]  # keep </s>: the model learns to stop
            truncated_summaries += 1
    return EncodedData(input_ids, labels, stats.dialogues_truncated, truncated_summaries)


def check_batch_split(batch_size: int, world_size: int) -> None:
    """The one check of --batch-size: at least one example, split evenly over the processes."""
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be at least 1")
    if batch_size % world_size:
        raise ValueError(f"--batch-size {batch_size} is the global batch: it must split evenly over the "
                         f"{world_size} processes")


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, rank: int = 0,
                           world_size: int = 1, pool_batches: int = 50) -> list[list[int]]:
    """Example indices per batch, the same for (seed, epoch); with several ranks this rank's share of each global
    batch, and a last batch smaller than world_size (at most world_size - 1 examples an epoch) left out."""
    if pool_batches <= 0:
        raise ValueError(f"pool_batches must be positive, got {pool_batches}")
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of world_size {world_size} processes")
    check_batch_split(batch_size, world_size)
    rng = np.random.default_rng([seed, epoch])  # a new order every epoch, the same one for every rank
    order = rng.permutation(len(lengths)).tolist()
    pool = batch_size * pool_batches  # a multiple of batch_size: only the very last batch can be short
    batches = []
    for start in range(0, len(order), pool):
        members = sorted(order[start:start + pool], key=lambda i: -lengths[i])  # longest first
        batches += [members[j:j + batch_size] for j in range(0, len(members), batch_size)]
    batches = [batches[b] for b in rng.permutation(len(batches))]
    if world_size == 1:
        return batches
    return [batch[rank::world_size] for batch in batches if len(batch) >= world_size]


def collate(input_ids_list: Sequence[Sequence[int]], labels_list: Sequence[Sequence[int]],
            pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad one batch to its longest input and longest label; labels are padded with IGNORE_INDEX."""
    batch, t_in, t_out = len(input_ids_list), max(map(len, input_ids_list)), max(map(len, labels_list))
    input_ids = torch.full((batch, t_in), pad_id, dtype=torch.long)  # (B, T_in)
    attention_mask = torch.zeros((batch, t_in), dtype=torch.long)  # (B, T_in): 1 = real token
    labels = torch.full((batch, t_out), IGNORE_INDEX, dtype=torch.long)  # (B, T_out)
    for row, (ids, lab) in enumerate(zip(input_ids_list, labels_list)):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(lab)] = torch.tensor(lab, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batches_by_epoch(examples: Sequence[Example], tokenizer, batch_size: int, seed: int, max_input_tokens: int = 512,
                     max_label_tokens: int = 128, rank: int = 0, world_size: int = 1, template: str = COURSE_TEMPLATE
                     ) -> Callable[[int], list[dict[str, torch.Tensor]]]:
    """A function epoch -> this process's collated batches of `examples`: what `loop.train` takes."""
    enc = encode_for_training(examples, tokenizer, max_input_tokens, max_label_tokens, template)
    lengths = enc.input_lengths

    def batches_for_epoch(epoch: int) -> list[dict[str, torch.Tensor]]:
        groups = length_grouped_batches(lengths, batch_size, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
        return [collate([enc.input_ids[i] for i in g], [enc.labels[i] for i in g], pad_id=tokenizer.pad_token_id)
                for g in groups]
    return batches_for_epoch


def padding_fraction(batches: Sequence[Sequence[int]], input_lengths: Sequence[int],
                     label_lengths: Sequence[int] | None = None) -> float:
    """Share of all token slots (inputs, plus labels when given) that are padding, over these batches."""
    padded = real = 0
    for lengths in (input_lengths, label_lengths):
        if lengths is None:
            continue
        for batch in batches:
            longest = max(lengths[i] for i in batch)
            padded += longest * len(batch)
            real += sum(lengths[i] for i in batch)
    return (padded - real) / padded if padded else 0.0

"""Summaries from the model: greedy (or beam-search) decoding in length-sorted batches, and each summary's length.

`generate` sorts the prompts by token length (longest first, so an out-of-memory error shows in the first batch),
decodes greedily as the course does (`do_sample=False`, one beam; beam search with `num_beams` > 1) and puts the
summaries back in order. In bf16 or fp16 it runs under the same autocast as training (model/device.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from model.device import autocast


@dataclass(frozen=True)
class GenerationConfig:
    """How a summary is decoded (--max-new-tokens, --num-beams), checked when made."""
    max_new_tokens: int = 200
    num_beams: int = 1               # 1: greedy decoding (the course's); N > 1: beam search over N beams

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens {self.max_new_tokens}: must be at least 1")
        if self.num_beams < 1:
            raise ValueError(f"--num-beams {self.num_beams}: must be 1 (greedy) or more (beam search)")


class Generated(NamedTuple):
    """The summaries in the order of the prompts, and each one's generated length in tokens."""
    texts: list[str]
    lengths: list[int]


def mean_length(lengths: list[int]) -> float:
    """`gen_len`: the mean generated length in tokens, over the summaries."""
    return round(sum(lengths) / len(lengths), 2) if lengths else 0.0


def generate(model, tokenizer, prompts: list[str], config: GenerationConfig = GenerationConfig(), batch_size: int = 8,
             device=None, max_input_tokens: int = 512, precision: str = "fp32", progress: bool = True) -> Generated:
    """Summarise every prompt. Each summary's length is counted as the Hugging Face summarisation example's
    `gen_len` counts it: the generated ids that are not padding (the decoder's start token <pad> is not counted,
    the closing </s> is)."""
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be at least 1")
    if not prompts:  # under torchrun, a process's share of fewer dialogues than processes (the tokenizer fails on [])
        return Generated([], [])
    device = torch.device(device) if device is not None else next(model.parameters()).device
    prompt_lengths = [len(ids) for ids in tokenizer(prompts, verbose=False).input_ids]
    order = sorted(range(len(prompts)), key=lambda i: -prompt_lengths[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    model.eval()
    summaries, lengths = [""] * len(prompts), [0] * len(prompts)
    with torch.inference_mode(), autocast(precision, device):
        for batch in tqdm(batches, desc="generating", unit="batch", disable=not progress):
            enc = tokenizer([prompts[i] for i in batch], padding=True, truncation=True,
                            max_length=max_input_tokens, return_tensors="pt").to(device)      # (B, T_in)
            out = model.generate(**enc, do_sample=False, num_beams=config.num_beams,
                                 max_new_tokens=config.max_new_tokens)                         # (B, T_out)
            counts = (out != tokenizer.pad_token_id).sum(dim=1).tolist()  # (B,): tokens generated, not padding
            for i, text, count in zip(batch, tokenizer.batch_decode(out, skip_special_tokens=True), counts):
                summaries[i], lengths[i] = text.strip(), count
    return Generated(summaries, lengths)

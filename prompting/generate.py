"""Summaries for a list of prompts, in batches of similar length: greedy, or beam search with `num_beams` > 1.

A batch is padded to its longest prompt, so batching prompts in the order given wastes work on padding. We sort
by token length (longest first, so an out-of-memory error shows up in the first batch, not the last), generate,
and put the summaries back in the order of the prompts. Greedy decoding (`do_sample=False`, one beam) is what the
course uses (docs/NOTES.md, "Prompts and generation"); `skip_special_tokens=True` drops <pad> and </s> from the text.
`precision` is one that train_loop/precision.py chose for the device: 'bf16' (or 'fp16') runs the forward passes
under autocast, as training and validation do; the default 'fp32' keeps the model's own dtype. (The autocast
context is written out here, not imported: prompting/ does not depend on train_loop/, which depends on it.)

`generate` also counts each summary's length in tokens as the Hugging Face summarisation example does for its
`gen_len` (the generated ids that are not padding: the decoder's start token is <pad> and is not counted, the
closing </s> is), so runs report how long their summaries are.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Generated(NamedTuple):
    """The summaries in the order of the prompts, and each one's generated length in tokens."""

    texts: list[str]
    lengths: list[int]


def mean_length(lengths: list[int]) -> float:
    """`gen_len`: the mean generated length in tokens, over the summaries."""
    return round(sum(lengths) / len(lengths), 2) if lengths else 0.0


def generate_summaries(model, tokenizer, prompts: list[str], batch_size: int = 8, max_new_tokens: int = 200,
                       device=None, max_input_tokens: int = 512, progress: bool = True,
                       precision: str = "fp32", num_beams: int = 1) -> list[str]:
    """The summaries alone (see `generate`)."""
    return generate(model, tokenizer, prompts, batch_size, max_new_tokens, device, max_input_tokens, progress,
                    precision, num_beams).texts


def generate(model, tokenizer, prompts: list[str], batch_size: int = 8, max_new_tokens: int = 200, device=None,
             max_input_tokens: int = 512, progress: bool = True, precision: str = "fp32",
             num_beams: int = 1) -> Generated:
    """Summarise every prompt; `num_beams` 1 is greedy decoding, more is beam search over that many beams."""
    if num_beams <= 0:
        raise ValueError(f"--num-beams must be 1 (greedy) or more (beam search), got {num_beams}")
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    if max_new_tokens <= 0:
        raise ValueError(f"--max-new-tokens must be positive, got {max_new_tokens}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    prompt_lengths = [len(ids) for ids in tokenizer(prompts, verbose=False).input_ids]
    order = sorted(range(len(prompts)), key=lambda i: -prompt_lengths[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    model.eval()
    summaries: list[str] = [""] * len(prompts)
    lengths: list[int] = [0] * len(prompts)
    autocast = nullcontext() if precision == "fp32" else torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
    with torch.inference_mode(), autocast:
        for batch in tqdm(batches, desc="generating", unit="batch", disable=not progress):
            enc = tokenizer([prompts[i] for i in batch], padding=True, truncation=True,
                            max_length=max_input_tokens, return_tensors="pt").to(device)  # (B, T_in)
            out = model.generate(**enc, do_sample=False, num_beams=num_beams, max_new_tokens=max_new_tokens)  # (B, T_out)
            counts = (out != tokenizer.pad_token_id).sum(dim=1).tolist()  # (B,): tokens generated, not padding
            for i, text, count in zip(batch, tokenizer.batch_decode(out, skip_special_tokens=True), counts):
                summaries[i], lengths[i] = text.strip(), count
    return Generated(summaries, lengths)

"""Greedy summaries for a list of prompts, in batches of similar length.

A batch is padded to its longest prompt, so batching prompts in the order given wastes work on padding. We sort
by token length (longest first, so an out-of-memory error shows up in the first batch, not the last), generate,
and put the summaries back in the order of the prompts. Greedy decoding (`do_sample=False`, one beam) is what the
course uses (docs/NOTES.md, "Prompts and generation"); `skip_special_tokens=True` drops <pad> and </s> from the text.
`precision` is one that train_loop/precision.py chose for the device: 'bf16' (or 'fp16') runs the forward passes
under autocast, as training and validation do; the default 'fp32' keeps the model's own dtype. (The autocast
context is written out here, not imported: prompting/ does not depend on train_loop/, which depends on it.)
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from tqdm.auto import tqdm

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def generate_summaries(model, tokenizer, prompts: list[str], batch_size: int = 8, max_new_tokens: int = 200,
                       device=None, max_input_tokens: int = 512, progress: bool = True,
                       precision: str = "fp32") -> list[str]:
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    if max_new_tokens <= 0:
        raise ValueError(f"--max-new-tokens must be positive, got {max_new_tokens}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    lengths = [len(ids) for ids in tokenizer(prompts, verbose=False).input_ids]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    model.eval()
    summaries: list[str] = [""] * len(prompts)
    autocast = nullcontext() if precision == "fp32" else torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
    with torch.inference_mode(), autocast:
        for batch in tqdm(batches, desc="generating", unit="batch", disable=not progress):
            enc = tokenizer([prompts[i] for i in batch], padding=True, truncation=True,
                            max_length=max_input_tokens, return_tensors="pt").to(device)  # (B, T_in)
            out = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)  # (B, T_out)
            for i, text in zip(batch, tokenizer.batch_decode(out, skip_special_tokens=True)):
                summaries[i] = text.strip()
    return summaries

"""The three ways to summarise a list of prompts that bench/bench_generate.py times against each other.

Each side takes the same model object, the same prompts (cut to 512 tokens) and the same greedy settings, and
returns the summaries as text (special tokens skipped, stripped), so tokenising and decoding are timed too:

* `ours`: model/generate.py's `generate`, batches of similar length.
* `pipeline`: transformers' pipeline with the same batch size. transformers 5.x removed the "summarization" and
  "text2text-generation" tasks (`transformers.pipelines.REMOVED_TASKS`: "Use the `text-generation` pipeline");
  the text-generation pipeline is the one left that takes text prompts and calls `model.generate` on batches of
  them. It runs T5 (after logging that T5 is not a causal LM) when asked for token ids (`return_tensors=True`):
  its text output would cut the prompt's length off the front of the summary, which only makes sense for
  decoder-only models. It batches prompts in the order given and pads them on the left.
* `seeds_loop`: the course notebooks' loop, one dialogue at a time: tokenize, `model.generate`, decode.

`GenerateCounter` wraps `model.generate` so every side is checked to generate the same number of tokens.
"""
from __future__ import annotations

import logging

from model.generate import GenerationConfig, generate


class GenerateCounter:
    """Counts, across every `model.generate` call while active: rows, new tokens, and padded input positions.

    A seq2seq `generate` returns (B, 1 + new) ids: the decoder start token, then the new tokens.
    """

    def __init__(self, model):
        self.model, self.rows, self.new_tokens, self.input_positions, self.real_inputs = model, 0, 0, 0, 0

    def __enter__(self):
        inner = self.model.generate

        def counting_generate(*args, **kwargs):
            out = inner(*args, **kwargs)  # (B, 1 + new)
            ids = kwargs.get("input_ids", args[0] if args else None)  # (B, T_in)
            mask = kwargs.get("attention_mask")
            self.rows += out.shape[0]
            self.new_tokens += out.shape[0] * (out.shape[1] - 1)
            self.input_positions += ids.numel()
            self.real_inputs += int(mask.sum()) if mask is not None else ids.numel()
            return out

        self.model.generate = counting_generate  # an instance attribute shadows the method
        return self

    def __exit__(self, *exc):
        del self.model.generate

    def padding_fraction(self) -> float:
        return 1 - self.real_inputs / max(self.input_positions, 1)


def ours(model, tokenizer, prompts, batch_size, new_tokens, max_input_tokens=512, precision="fp32"):
    """The length is forced through the model's generation config (generate sets max_new_tokens)."""
    model.generation_config.min_new_tokens = new_tokens
    try:
        return generate(model, tokenizer, prompts, GenerationConfig(max_new_tokens=new_tokens), batch_size,
                        max_input_tokens=max_input_tokens, precision=precision, progress=False).texts
    finally:
        model.generation_config.min_new_tokens = None


def make_pipeline(model, tokenizer, batch_size):
    """transformers' text-generation pipeline around our model (it sets its tokenizer to pad on the left)."""
    from transformers import pipeline

    quiet = logging.getLogger("transformers.pipelines.base")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # "T5ForConditionalGeneration is not supported for text-generation"
    try:
        return pipeline("text-generation", model=model, tokenizer=tokenizer, batch_size=batch_size,
                        device=next(model.parameters()).device)
    finally:
        quiet.setLevel(level)


def pipeline_side(pipe, prompts, new_tokens, max_input_tokens=512):
    outputs = pipe(prompts, return_tensors=True, do_sample=False, num_beams=1, max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, add_special_tokens=True,  # T5 ends its inputs with </s>
                   tokenizer_encode_kwargs={"truncation": True, "max_length": max_input_tokens})
    return [pipe.tokenizer.decode(out[0]["generated_token_ids"], skip_special_tokens=True).strip()
            for out in outputs]


def seeds_loop(model, tokenizer, prompts, new_tokens, max_input_tokens=512):
    """One prompt at a time, as the course notebooks summarise (with the 512-token cut made explicit)."""
    summaries = []
    device = next(model.parameters()).device
    for prompt in prompts:
        input_ids = tokenizer(prompt, return_tensors="pt", truncation=True,
                              max_length=max_input_tokens).input_ids.to(device)  # (1, T_in)
        out = model.generate(input_ids=input_ids, do_sample=False, num_beams=1, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens)  # (1, 1 + new)
        summaries.append(tokenizer.decode(out[0], skip_special_tokens=True).strip())
    return summaries

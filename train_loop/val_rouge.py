"""Validation ROUGE while training (`--select-by rouge1|rouge2|rougeL|rougeLsum`): the validation dialogues
summarised exactly as the evaluation after training will summarise them, so the weights kept for their ROUGE are
scored alike at the end.

The same prompts (the run's template, cut inside it to `--max-input-tokens`, prompting/prompts.py), the same
decoding (`--max-new-tokens`, `--num-beams`), batch size and precision (model/generate.py), the same corpus ROUGE
(eval/evaluate.py: the best of a dialogue's references, the stemmer as `--stemmer`, sentences split for Lsum).
Loaded only when asked for: a run kept by its validation loss never generates during training.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from eval.evaluate import score_corpus
from model.generate import GenerationConfig, generate
from prompting.dialogsum import Example
from prompting.prompts import build_prompts


def rouge_of_summaries(examples: Sequence[Example], tokenizer, template: str, generation: GenerationConfig,
                       batch_size: int, device, max_input_tokens: int, precision: str,
                       use_stemmer: bool = True) -> Callable[[nn.Module], dict[str, float]]:
    """A function model -> {"rouge1": mean F, ..., "rougeLsum": ...} over `examples`; the prompts built once."""
    prompts = build_prompts(examples, tokenizer, shots=0, max_tokens=max_input_tokens, template=template).prompts

    def measure(model: nn.Module) -> dict[str, float]:
        summaries = generate(model, tokenizer, prompts, generation, batch_size, device, max_input_tokens, precision,
                             progress=False).texts
        return score_corpus(examples, summaries, use_stemmer=use_stemmer)[0]
    return measure

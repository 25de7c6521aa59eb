"""The two prompt templates of the course notebook (DeepLearning.AI's "Generative AI with LLMs" labs;
docs/NOTES.md, "Prompts"), as plain functions.

* `zero_shot_prompt`: an instruction, the dialogue, and "Summary: ". Fine-tuning uses it too, so a fine-tuned model
  is asked exactly what it was trained on.
* `flan_dialogue_prompt`: one of FLAN's own dialogue-summary templates ("What was going on?"). Each shot is a solved
  example; the target is the same text with the summary left for the model to write.

Newlines and repeated spaces do not survive T5's tokenizer (they collapse to one space), so the line breaks here
are for the human reading the side-by-side tables, not for the model.
"""
from __future__ import annotations

from typing import Sequence


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

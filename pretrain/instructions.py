"""Instructions that are not summarisation, made from DialogSum's train dialogues: FLAN's idea (Chung et al. 2022,
arXiv:2210.11416) in miniature. A model taught to follow instructions about dialogues, but never to summarise one,
makes the study's zero-shot row honest: it is asked something it was never trained to answer.

Three tasks, each a question about one dialogue and an answer read off that dialogue (or its `topic`, a field of
DialogSum that names the subject in a few words, "get a check-up"; it is not a summary):

    topic          What is the topic of the following conversation?\n\n{dialogue}          -> {topic}
    speaker        Who says "{utterance}" in the following conversation?\n\n{dialogue}     -> #Person2#
    continuation   How does the following conversation continue?\n\n{first k turns}       -> {turn k + 1}

Turns are DialogSum's lines, `#Person1#: text`. A dialogue with fewer than two such turns gets the topic task.
"""
from __future__ import annotations

import re

import numpy as np

TASKS = ("topic", "speaker", "continuation")
TURN = re.compile(r"^(#[^#\s]+#):\s*(.+)$")  # "#Person1#: Hello." -> ("#Person1#", "Hello.")


def turns(dialogue: str) -> list[tuple[str, str]]:
    """The (speaker, text) of each line that starts with a speaker tag."""
    return [m.groups() for line in dialogue.splitlines() if (m := TURN.match(line.strip()))]


def instruction(dialogue: str, topic: str, rng: np.random.Generator) -> tuple[str, str]:
    """(prompt, answer) for one dialogue: one of the three tasks, drawn by `rng`."""
    said = turns(dialogue)
    task = TASKS[rng.integers(len(TASKS))] if len(said) >= 2 else "topic"
    if task == "topic" and not topic:
        task = "continuation" if len(said) >= 2 else "speaker"
    if task == "topic":
        return f"What is the topic of the following conversation?\n\n{dialogue}", topic
    if task == "speaker" and said:
        speaker, text = said[rng.integers(len(said))]
        return f'Who says "{text}" in the following conversation?\n\n{dialogue}', speaker
    if len(said) < 2:  # no topic and no turns to speak of: ask for the dialogue's first words back
        return f"How does the following conversation begin?\n\n{dialogue}", dialogue.split("\n")[0]
    k = int(rng.integers(1, len(said)))  # 1 <= k < number of turns: at least one turn given, one to predict
    shown = "\n".join(f"{who}: {text}" for who, text in said[:k])
    who, text = said[k]
    return f"How does the following conversation continue?\n\n{shown}", f"{who}: {text}"

"""Instructions that are not summarisation, made from DialogSum's train dialogues: FLAN's idea (Chung et al. 2022,
arXiv:2210.11416) in miniature. A model taught to follow instructions about dialogues, but never to summarise one,
makes the study's zero-shot row honest: it is asked something it was never trained to answer.

Four tasks, each a question about one dialogue and an answer read off that dialogue (or its `topic`, a field of
DialogSum that names the subject in a few words, "get a check-up"; it is not a summary):

    topic          What is the topic of the following conversation?\n\n{dialogue}          -> {topic}
    speaker        Who says "{utterance}" in the following conversation?\n\n{dialogue}     -> #Person2#
    continuation   How does the following conversation continue?\n\n{first k turns}       -> {turn k + 1}
    after          What is said after "{turn k}" in the following conversation?\n\n{dialogue} -> {turn k + 1}

`after` is drawn half the time. It is the one task whose answer must be found in the input and copied out of it:
without it, a model pretrained for 48 minutes learned to answer from its prior alone (every topic "a job"), and
fine-tuning it gave the same summary for every dialogue (docs/pretraining.md). Finding a quoted line and copying
what follows is the cross-attention a summary needs to name who did what.

Turns are DialogSum's lines, `#Person1#: text`. A dialogue with fewer than two such turns gets the topic task.
"""
from __future__ import annotations

import re

import numpy as np

TASKS = ("topic", "speaker", "continuation", "after")
TASK_WEIGHTS = (1 / 6, 1 / 6, 1 / 6, 1 / 2)
TURN = re.compile(r"^(#[^#\s]+#):\s*(.+)$")  # "#Person1#: Hello." -> ("#Person1#", "Hello.")


def turns(dialogue: str) -> list[tuple[str, str]]:
    """The (speaker, text) of each line that starts with a speaker tag."""
    return [m.groups() for line in dialogue.splitlines() if (m := TURN.match(line.strip()))]


def instruction(dialogue: str, topic: str, rng: np.random.Generator) -> tuple[str, str]:
    """(prompt, answer) for one dialogue: one of the four tasks, drawn by `rng` with TASK_WEIGHTS."""
    said = turns(dialogue)
    task = TASKS[rng.choice(len(TASKS), p=TASK_WEIGHTS)] if len(said) >= 2 else "topic"
    if task == "topic" and not topic:
        task = "continuation" if len(said) >= 2 else "speaker"
    if task == "topic":
        return f"What is the topic of the following conversation?\n\n{dialogue}", topic
    if task == "speaker" and said:
        speaker, text = said[rng.integers(len(said))]
        return f'Who says "{text}" in the following conversation?\n\n{dialogue}', speaker
    if task == "after":
        k = int(rng.integers(len(said) - 1))  # a turn that has one after it
        return (f'What is said after "{said[k][1]}" in the following conversation?\n\n{dialogue}',
                f"{said[k + 1][0]}: {said[k + 1][1]}")
    if len(said) < 2:  # no topic and no turns to speak of: ask for the dialogue's first words back
        return f"How does the following conversation begin?\n\n{dialogue}", dialogue.split("\n")[0]
    k = int(rng.integers(1, len(said)))  # 1 <= k < number of turns: at least one turn given, one to predict
    shown = "\n".join(f"{who}: {text}" for who, text in said[:k])
    who, text = said[k]
    return f"How does the following conversation continue?\n\n{shown}", f"{who}: {text}"

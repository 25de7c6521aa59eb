"""Does a model read its input? Three probes on DialogSum validation dialogues, fp32, greedy.

    python bench/probe_input.py --model models/baby-flan-t5
    python bench/probe_input.py --model runs/study/full/model

1. Its answers to a pretraining instruction (the topic question) and to the summary prompt: how many distinct.
2. The summary loss (teacher-forced, the first human summary) with the dialogue, and with a one-word input ("x")
   instead: the nats per token the dialogue is worth. A model that ignores its input loses nothing without it.
3. The encoder's last hidden state: how far each token's vector is from the mean over the tokens (relative to its
   norm). A residual stream dominated by one vector carries little about which token is where.
4. Pretraining's own task, span corruption: the loss of each dialogue's masked spans given its corrupted dialogue,
   and given another dialogue's (the one n/2 places away): what reading the input is worth where it was trained.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from model.device import describe_machine  # noqa: E402
from model.load import load_pretrained, load_tokenizer  # noqa: E402
from prompting.dialogsum import load_split  # noqa: E402
from prompting.prompts import zero_shot_prompt  # noqa: E402
from pretrain.span_corruption import corrupt  # noqa: E402


def greedy(model, tokenizer, texts: list[str], max_new_tokens: int = 30) -> list[str]:
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=512)
    return tokenizer.batch_decode(model.generate(**enc, max_new_tokens=max_new_tokens), skip_special_tokens=True)


def summary_loss(model, tokenizer, source: str, summary: str) -> float:
    enc = tokenizer(source, return_tensors="pt", truncation=True, max_length=512)
    return model(**enc, labels=tokenizer(summary, return_tensors="pt").input_ids).loss.item()


def ids_loss(model, input_ids: list[int], labels: list[int]) -> float:
    return model(input_ids=torch.tensor([input_ids]), labels=torch.tensor([labels])).loss.item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="models/baby-flan-t5")
    p.add_argument("--data", default="data/dialogsum")
    p.add_argument("--dialogues", type=int, default=16)
    args = p.parse_args()
    torch.manual_seed(0)
    tokenizer, model = load_tokenizer(args.model), load_pretrained(args.model).eval()
    examples = load_split(args.data, "validation", args.dialogues)
    with torch.no_grad():
        topics = greedy(model, tokenizer, [f"What is the topic of the following conversation?\n\n{e.dialogue}"
                                           for e in examples])
        summaries = greedy(model, tokenizer, [zero_shot_prompt(e.dialogue) for e in examples])
        with_dialogue = [summary_loss(model, tokenizer, zero_shot_prompt(e.dialogue), e.references[0])
                         for e in examples]
        without = [summary_loss(model, tokenizer, "x", e.references[0]) for e in examples]
        spread = []
        for e in examples:
            h = model.encoder(**tokenizer(e.dialogue, return_tensors="pt", truncation=True, max_length=512)
                              ).last_hidden_state[0]                               # (T, d_model)
            spread.append(((h - h.mean(0)).norm(dim=-1).mean() / h.norm(dim=-1).mean()).item())
        rng = np.random.default_rng(0)
        n = len(examples)
        pairs = [corrupt(tokenizer(e.dialogue).input_ids[:-1][:511], rng, tokenizer.eos_token_id) for e in examples]
        own = [ids_loss(model, source, target) for source, target in pairs]
        other = [ids_loss(model, pairs[(k + n // 2) % n][0], pairs[k][1]) for k in range(n)]
    print(f"{args.model} on {n} validation dialogues; {describe_machine(torch.device('cpu'))}")
    print(f"topic answers: {len(set(topics))} distinct of {n}; most common {max(set(topics), key=topics.count)!r}"
          f" (true topics: {len({e.topic for e in examples})} distinct)")
    print(f"summaries: {len(set(summaries))} distinct of {n}; most common {max(set(summaries), key=summaries.count)!r}")
    print(f"summary loss per token: {sum(with_dialogue) / n:.3f} with the dialogue, {sum(without) / n:.3f} without: "
          f"the dialogue is worth {(sum(without) - sum(with_dialogue)) / n:.3f} nats per token")
    print(f"encoder output: tokens differ from their mean by {100 * sum(spread) / n:.1f}% of their norm")
    print(f"span corruption loss per token: {sum(own) / n:.3f} given its dialogue, {sum(other) / n:.3f} given "
          f"another's: the dialogue is worth {(sum(other) - sum(own)) / n:.3f} nats per token")


if __name__ == "__main__":
    main()

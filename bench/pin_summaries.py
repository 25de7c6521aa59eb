"""Pin the shipped model's greedy summaries: tests/test_baby_model.py checks that generation still gives them.

    python bench/pin_summaries.py        # rewrite tests/data/baby_summaries.json (only when the model is re-made)

The first few test dialogues, the zero-shot prompt, fp32, greedy decoding: the settings a library upgrade must not
change silently (adapter-hub/adapters#760 is a report of exactly that).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prompting.dialogsum import load_split  # noqa: E402
from model.generate import GenerationConfig, generate  # noqa: E402
from model.load import load_model_and_tokenizer  # noqa: E402
from prompting.prompts import build_prompts  # noqa: E402

MODEL, DATA, PINNED = ROOT / "models" / "baby-flan-t5", ROOT / "data" / "dialogsum", ROOT / "tests" / "data" / "baby_summaries.json"
COUNT, MAX_NEW_TOKENS = 4, 60


def summaries() -> dict[str, str]:
    model, tokenizer = load_model_and_tokenizer(str(MODEL))
    examples = load_split(str(DATA), "test", COUNT)
    prompts = build_prompts(examples, tokenizer, shots=0).prompts
    texts = generate(model, tokenizer, prompts, GenerationConfig(max_new_tokens=MAX_NEW_TOKENS), batch_size=COUNT,
                     progress=False).texts
    return {ex.id: text for ex, text in zip(examples, texts)}


if __name__ == "__main__":
    PINNED.parent.mkdir(exist_ok=True)
    PINNED.write_text(json.dumps(summaries(), indent=2) + "\n")
    print(f"wrote {PINNED}")

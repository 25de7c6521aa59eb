"""The summarising benchmark compares like with like: every side generates the forced number of tokens and the
same greedy text, and the counter it relies on counts what `generate` returned."""
import pytest
import torch
from transformers import AutoTokenizer

from bench import generate_sides as sides
from model.load import build_from_config
from tests.conftest import SMALL_DIR, tiny_t5_config

PROMPTS = ["Summarize the following conversation.\n\n#Person1#: Lunch at noon?\n#Person2#: Sure.\n\nSummary: ",
           "short", "A longer prompt about a meeting on Monday with Bob, Alice and their manager, who wants a report.",
           "Two people talk about dinner plans."]
NEW = 5


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(SMALL_DIR))


@pytest.fixture(scope="module")
def model(tokenizer):
    # float64 so that left (pipeline) and right (ours) padding cannot flip an argmax
    return build_from_config(tiny_t5_config(vocab_size=len(tokenizer)), seed=5, dtype=torch.float64).eval()


def test_every_side_generates_exactly_the_forced_tokens_and_the_same_text(model, tokenizer):
    pipe = sides.make_pipeline(model, AutoTokenizer.from_pretrained(str(SMALL_DIR)), batch_size=2)
    runs = {"ours": lambda: sides.ours(model, tokenizer, PROMPTS, 2, NEW),
            "pipeline": lambda: sides.pipeline_side(pipe, PROMPTS, NEW),
            "loop": lambda: sides.seeds_loop(model, tokenizer, PROMPTS, NEW)}
    texts = {}
    for name, run in runs.items():
        with sides.GenerateCounter(model) as counter:
            texts[name] = run()
        assert counter.rows == len(PROMPTS), name
        assert counter.new_tokens == len(PROMPTS) * NEW, name  # min_new_tokens == max_new_tokens on every side
    assert texts["ours"] == texts["pipeline"] == texts["loop"]
    assert len(set(texts["ours"])) > 1  # distinct summaries, so a mix-up of the order would show
    assert model.generation_config.min_new_tokens is None  # ours leaves the model's settings as it found them
    assert "generate" not in vars(model)  # the counter took its wrapper away again


def test_counter_reports_the_padding_it_was_given(model, tokenizer):
    enc = tokenizer(PROMPTS[:2], padding=True, return_tensors="pt")  # (2, T): one row padded
    with sides.GenerateCounter(model) as counter:
        model.generate(**enc, max_new_tokens=2, min_new_tokens=2)
    real, positions = int(enc.attention_mask.sum()), enc.input_ids.numel()
    assert counter.padding_fraction() == pytest.approx(1 - real / positions)
    assert 0 < counter.padding_fraction() < 1

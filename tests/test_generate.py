"""Generation: length-sorted batches give the same greedy summaries as one prompt at a time, in the input order."""
import pytest
import torch
from transformers import AutoTokenizer

from model.generate import GenerationConfig, generate

from model.load import build_from_config
from tests.conftest import SMALL_DIR, tiny_t5_config


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(SMALL_DIR))


@pytest.fixture(scope="module")
def model(tokenizer):
    # FLAN-T5's vocabulary (the real tokenizer's ids) on a tiny body; float64 so padding cannot flip an argmax.
    return build_from_config(tiny_t5_config(vocab_size=len(tokenizer)), seed=3, dtype=torch.float64).eval()


PROMPTS = ["Summarize: hello there.", "A much longer prompt about a meeting on Monday at the office with Bob, "
           "Alice and their manager, who wants the report done.", "short", "Two people talk about dinner plans."]


def summaries(model, tokenizer, prompts, batch_size=8, max_new_tokens=6):
    return generate(model, tokenizer, prompts, GenerationConfig(max_new_tokens), batch_size, progress=False).texts


def test_batched_length_sorted_generation_matches_one_prompt_at_a_time(model, tokenizer):
    one_by_one = [summaries(model, tokenizer, [p], batch_size=1)[0] for p in PROMPTS]
    batched = summaries(model, tokenizer, PROMPTS, batch_size=3)
    assert batched == one_by_one  # same text, same (input) order
    assert len(set(one_by_one)) > 1  # distinct outputs, so a mix-up of the order would show


def test_max_new_tokens_bounds_the_summary(model, tokenizer):
    summary = summaries(model, tokenizer, PROMPTS[:1], max_new_tokens=3)[0]
    assert 0 < len(tokenizer(summary, add_special_tokens=False).input_ids) <= 3 + 1  # +1: a re-split word


def test_impossible_numbers_are_refused(model, tokenizer):
    with pytest.raises(ValueError, match="--batch-size 0: must be at least 1"):
        summaries(model, tokenizer, PROMPTS, batch_size=0)
    with pytest.raises(ValueError, match="--max-new-tokens 0: must be at least 1"):
        summaries(model, tokenizer, PROMPTS, max_new_tokens=0)


def test_gen_len_counts_the_generated_tokens_that_are_not_padding(model, tokenizer):
    """As the Hugging Face summarisation example: the decoder's start (<pad>) is not counted, the ids after it
    are, up to and including </s>; a batch padded to its longest summary counts each one's own length."""
    from model.generate import generate, mean_length

    generated = generate(model, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=6), batch_size=4, progress=False)
    for prompt, length in zip(PROMPTS, generated.lengths):
        enc = tokenizer([prompt], return_tensors="pt")
        out = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=6)[0]  # (1 + T_out,)
        assert out[0] == tokenizer.pad_token_id and length == len(out) - 1
    assert mean_length(generated.lengths) == round(sum(generated.lengths) / len(PROMPTS), 2)


def test_beam_search_is_offered_and_checked(model, tokenizer):
    from model.generate import generate

    beams = generate(model, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=6, num_beams=3), 2, progress=False)
    assert len(beams.texts) == len(PROMPTS) and all(0 < n <= 6 + 1 for n in beams.lengths)
    with pytest.raises(ValueError, match="--num-beams 0: must be 1"):
        GenerationConfig(num_beams=0)


def test_no_prompts_give_no_summaries_and_the_shares_still_gather(model, tokenizer, monkeypatch):
    """Under torchrun a rank's share of fewer dialogues than processes is empty (--max-eval-samples 1 on 2)."""
    from model.generate import Generated, generate, mean_length
    from train_loop.distributed import Parallel

    assert generate(model, tokenizer, [], GenerationConfig(max_new_tokens=6), progress=False) == Generated([], [])
    assert mean_length([]) == 0.0
    rank_0, rank_1 = Parallel(rank=0, world_size=2), Parallel(rank=1, world_size=2)
    assert rank_0.share(["only"]) == ["only"] and rank_1.share(["only"]) == []
    monkeypatch.setattr(Parallel, "gather", lambda self, share: [share, []])  # what gather_object gives rank 0
    assert rank_0.gather_shares(["only"]) == ["only"]

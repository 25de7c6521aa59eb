"""Prompts: the course's templates, shots from train only, every prompt within 512 real tokens, cuts counted."""
import pytest
from transformers import AutoTokenizer

from prompting.dialogsum import Example, load_split
from prompting.prompts import build_prompts, zero_shot_prompt
from prompting.shots import flan_dialogue_prompt, flan_query
from tests.conftest import DATA_DIR, SMALL_DIR


@pytest.fixture(scope="module")
def tokenizer():
    tok = AutoTokenizer.from_pretrained(str(SMALL_DIR))
    assert tok.is_fast  # batch tokenisation and character offsets need the Rust tokenizer
    return tok


@pytest.fixture(scope="module")
def splits():
    return load_split(str(DATA_DIR), "train"), load_split(str(DATA_DIR), "test")


@pytest.fixture(scope="module")
def test_prompts(tokenizer, splits):
    train, test = splits
    return {k: build_prompts(test, tokenizer, shots=k, train=train, seed=42) for k in (1, 3)}


def n_tokens(tokenizer, texts):
    return [len(ids) for ids in tokenizer(texts, verbose=False).input_ids]


def test_templates_are_the_course_notebooks():  # the course notebook's text (docs/NOTES.md, "Prompts")
    assert zero_shot_prompt("D") == "Summarize the following conversation.\n\nD\n\nSummary: "
    assert flan_dialogue_prompt([("A", "S")], "D") == (
        "\nDialogue:\n\nA\n\nWhat was going on?\nS\n\n\n" "\nDialogue:\n\nD\n\nWhat was going on?\n")


@pytest.mark.parametrize("shots", [1, 3])
def test_every_prompt_for_every_test_dialogue_fits_512_real_tokens(tokenizer, splits, test_prompts, shots):
    train, test = splits
    result = test_prompts[shots]
    lengths = n_tokens(tokenizer, result.prompts)
    assert max(lengths) <= 512
    assert lengths == result.stats.lengths  # the reported statistics are the prompts' real lengths
    # The target is whole at the end of its prompt, unless it alone (in its template) exceeds the budget.
    whole = [p.endswith(flan_query(ex.dialogue)) for p, ex in zip(result.prompts, test)]
    alone = n_tokens(tokenizer, [flan_query(ex.dialogue) for ex in test])
    assert all(w or a > 512 for w, a in zip(whole, alone))
    assert whole.count(False) == result.stats.dialogues_truncated > 0
    assert all(p.endswith("What was going on?\n") for p in result.prompts)
    stats = result.stats
    assert stats.shots_used + stats.shots_dropped == shots * len(test)
    assert stats.shots_used == sum(map(len, result.shot_ids))


def test_shots_come_from_train_only(splits, test_prompts):
    train, test = splits
    train_by_id = {ex.id: ex for ex in train}
    for result in test_prompts.values():
        used = {i for ids in result.shot_ids for i in ids}
        assert used and used <= set(train_by_id) and not used & {ex.id for ex in test}
        for prompt, ids in zip(result.prompts, result.shot_ids):  # each kept shot's summary is in its prompt, whole
            assert all(train_by_id[i].references[0] in prompt for i in ids)


def test_shots_are_fixed_by_seed_and_by_target_alone(tokenizer, splits, test_prompts):
    train, test = splits
    few = build_prompts(test[:20], tokenizer, shots=3, train=train, seed=42)
    assert few.prompts == test_prompts[3].prompts[:20]  # a target's prompt does not depend on its neighbours
    other = build_prompts(test[:20], tokenizer, shots=3, train=train, seed=7)
    assert other.shot_ids != few.shot_ids


def words(n, word="apple"):
    return " ".join([word] * n)  # " apple" is one token of FLAN-T5's vocabulary


def test_shots_are_dropped_before_the_longest_is_cut_and_the_target_is_left_whole(tokenizer):
    target = Example("t", words(20, "pear"), ("r",), "")
    a, b, c = (Example(name, words(n), (f"summary {name}",), "") for name, n in (("a", 300), ("b", 150), ("c", 100)))
    # 512 tokens: cutting ~80 tokens off the longest shot is enough, nothing is dropped.
    result = build_prompts([target], tokenizer, shots=3, train=[a, b, c], max_tokens=512)
    assert (result.stats.shots_dropped, result.stats.shots_truncated) == (0, 1)
    assert words(300) not in result.prompts[0] and words(150) in result.prompts[0]
    # 300 tokens: the longest shot would have to shrink below MIN_SHOT_DIALOGUE_TOKENS (64): dropped, then b is cut.
    result = build_prompts([target], tokenizer, shots=3, train=[a, b, c], max_tokens=300)
    assert (result.stats.shots_dropped, result.stats.shots_truncated) == (1, 1)
    assert set(result.shot_ids[0]) == {"b", "c"} and words(150) not in result.prompts[0]
    prompt = result.prompts[0]
    assert prompt.endswith(flan_query(target.dialogue)) and "summary b" in prompt and "summary c" in prompt
    assert n_tokens(tokenizer, [prompt])[0] <= 300


def test_a_target_too_long_alone_is_cut_inside_its_template(tokenizer):
    target = Example("t", words(600, "pear"), ("r",), "")
    shot = Example("s", words(50), ("a shot",), "")
    result = build_prompts([target], tokenizer, shots=1, train=[shot])
    stats = result.stats
    assert (stats.shots_dropped, stats.prompts_without_shots, stats.dialogues_truncated) == (1, 1, 1)
    assert result.prompts[0].endswith("\n\nWhat was going on?\n") and n_tokens(tokenizer, result.prompts) == [512]
    zero = build_prompts([target], tokenizer, shots=0)
    assert zero.prompts[0].endswith("pear\n\nSummary: ") and zero.stats.dialogues_truncated == 1
    assert zero.stats.lengths == n_tokens(tokenizer, zero.prompts) == [512]


def test_impossible_shot_requests_are_refused(tokenizer, splits):
    train, test = splits
    with pytest.raises(ValueError, match="--shots 3: only 2 train dialogues"):
        build_prompts(test[:2], tokenizer, shots=3, train=train[:2])
    with pytest.raises(ValueError, match="shots must come from another split"):
        build_prompts(train[:2], tokenizer, shots=1, train=train[:50])

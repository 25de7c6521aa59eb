"""The pretraining stream (pretrain/): T5's span corruption as the paper and its reference code define it, the
instruction tasks, and the two rules that keep the study honest: no summary of any split and no validation or test
dialogue ever enters pretraining."""
import json

import numpy as np
import pytest

from modes.pretrain import texts_of_train_split
from pretrain.instructions import instruction, turns
from pretrain.mixture import Text, epoch_examples, pretraining_batches
from pretrain.span_corruption import FIRST_SENTINEL, corrupt, noise_mask, random_segmentation, restore
from model.load import load_tokenizer
from tests.conftest import SMALL_DIR
from train_loop.data import IGNORE_INDEX


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(SMALL_DIR)


def test_segmentation_cuts_into_non_empty_pieces_that_add_up():
    rng = np.random.default_rng(0)
    for items, segments in ((10, 1), (10, 10), (77, 26), (5, 2)):
        pieces = random_segmentation(items, segments, rng)
        assert len(pieces) == segments and pieces.sum() == items and pieces.min() >= 1


@pytest.mark.parametrize("length", [2, 3, 20, 100, 511])
def test_noise_mask_has_15_percent_in_spans_of_mean_3_kept_span_first(length):
    mask = noise_mask(length, np.random.default_rng(length))
    noise = min(max(round(length * 0.15), 1), length - 1)
    spans = max(round(noise / 3.0), 1)
    assert mask.sum() == noise and not mask[0] and mask[-1]  # kept span first, a masked span last (reference code)
    starts = np.flatnonzero(np.diff(mask.astype(int), prepend=0) == 1)
    assert len(starts) == spans


def test_corrupt_puts_one_sentinel_per_span_and_the_target_restores_the_text():
    rng = np.random.default_rng(1)
    ids = list(range(100, 140))
    inputs, targets = corrupt(ids, rng, eos_id=1)
    sentinels = [t for t in inputs if t >= FIRST_SENTINEL - 99]
    assert sentinels == [FIRST_SENTINEL - k for k in range(len(sentinels))]  # <extra_id_0>, <extra_id_1>, ...
    assert [t for t in targets if t >= FIRST_SENTINEL - 99] == sentinels
    assert inputs[-1] == targets[-1] == 1 and len(targets) - 1 == len(sentinels) + 6  # 15% of 40 = 6 tokens
    assert restore(inputs, targets) == ids
    for length in (2, 7, 63, 300):
        seq = list(np.random.default_rng(length).integers(5, 30000, length))
        assert restore(*corrupt(seq, np.random.default_rng(length + 1))) == seq


def test_the_paper_sentinels_are_flan_t5s_extra_ids(tokenizer):
    assert tokenizer.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [FIRST_SENTINEL, FIRST_SENTINEL - 99]


def test_instructions_read_their_answer_off_the_dialogue():
    dialogue = "#Person1#: Hi, Tom.\n#Person2#: Hello, Ann. How are you?\n#Person1#: Fine, thanks."
    assert turns(dialogue)[1] == ("#Person2#", "Hello, Ann. How are you?")
    seen = {}
    for seed in range(40):
        prompt, answer = instruction(dialogue, "greeting", np.random.default_rng(seed))
        seen[prompt.split("\n")[0].split(" ")[0]] = (prompt, answer)
        if prompt.startswith("What is the topic"):
            assert answer == "greeting" and dialogue in prompt
        elif prompt.startswith("Who says"):
            said = prompt.split('"')[1]
            assert f"{answer}: {said}" in dialogue
        else:
            assert prompt.startswith("How does the following conversation continue?")
            shown = prompt.split("\n\n", 1)[1]
            assert dialogue.startswith(shown) and dialogue[len(shown):].strip() == answer or \
                dialogue[len(shown):].lstrip("\n").startswith(answer)
    assert set(seen) == {"What", "Who", "How"}  # all three tasks drawn


def write_split(folder, name, rows):
    with open(folder / name, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def test_no_summary_and_no_validation_or_test_dialogue_enters_pretraining(tmp_path, tokenizer):
    """Markers in every summary and in the held-out dialogues: none may be in any input or label of the stream."""
    train = [{"fname": f"train_{i}", "dialogue": f"#Person1#: Shall we meet at {i}?\n#Person2#: Yes, at {i} then.",
              "summary": f"zzsummary {i}", "topic": f"meeting {i}"} for i in range(24)]
    dev = [{"fname": f"dev_{i}", "dialogue": f"#Person1#: zzheldout dev {i}.\n#Person2#: Ok.", "summary": "zzsummary",
            "topic": "zzheldout"} for i in range(4)]
    test = [{"fname": f"test_{i}", "dialogue": f"#Person1#: zzheldout test {i}.\n#Person2#: Ok.",
             **{f"summary{k}": "zzsummary" for k in (1, 2, 3)}, **{f"topic{k}": "zzheldout" for k in (1, 2, 3)}}
            for i in range(4)]
    for name, rows in (("dialogsum.train.jsonl", train), ("dialogsum.dev.jsonl", dev), ("dialogsum.test.jsonl", test)):
        write_split(tmp_path, name, rows)
    texts = texts_of_train_split(str(tmp_path), None, seed=0)
    assert all(set(vars(t)) == {"dialogue", "topic"} for t in texts) and len(texts) == 24
    batches = pretraining_batches(texts, tokenizer, batch_size=8, seed=0)
    decoded = []
    for epoch in range(3):
        for batch in batches(epoch):
            decoded += tokenizer.batch_decode(batch["input_ids"]) + tokenizer.batch_decode(
                batch["labels"].clamp(min=0))
    stream = " ".join(decoded)
    assert "zzsummary" not in stream and "zzheldout" not in stream
    assert "Shall we meet" in stream and "meeting" in stream  # the train dialogues and topics are there


def test_each_epoch_has_two_examples_per_dialogue_new_spans_and_is_repeatable(tokenizer):
    texts = [Text(f"#Person1#: Number {i} is here today.\n#Person2#: Good, {i} it is.", f"numbers {i}")
             for i in range(10)]
    ids = [x[:-1] for x in tokenizer([t.dialogue for t in texts]).input_ids]
    first = epoch_examples(texts, ids, tokenizer, seed=3, epoch=0, max_input_tokens=512, max_label_tokens=128)
    assert len(first[0]) == len(first[1]) == 20
    assert first == epoch_examples(texts, ids, tokenizer, 3, 0, 512, 128)  # a resumed run sees the same epoch
    assert first != epoch_examples(texts, ids, tokenizer, 3, 1, 512, 128)  # the next epoch draws anew
    batches = pretraining_batches(texts, tokenizer, batch_size=4, seed=3, max_input_tokens=12, max_label_tokens=5)
    for epoch in range(2):
        got = batches(epoch)
        assert len(got) == 5 and sum(len(b["input_ids"]) for b in got) == 20  # the same count every epoch
        for b in got:
            assert b["input_ids"].shape[1] <= 12 and b["labels"].shape[1] <= 5
            ends = [row[row != IGNORE_INDEX][-1].item() for row in b["labels"]]
            assert ends == [tokenizer.eos_token_id] * len(ends)  # cut, still closed by </s>

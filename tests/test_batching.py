"""Tokenising for training and length-grouped batches: -100 exactly at padding, little padding, fair shares."""
import pytest
import torch
from transformers import AutoTokenizer

from prompting.dialogsum import Example, load_split
from train_loop.data import collate, encode_for_training, length_grouped_batches, padding_fraction
from tests.conftest import DATA_DIR, SMALL_DIR


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(SMALL_DIR))


@pytest.fixture(scope="module")
def train_encoded(tokenizer):
    return encode_for_training(load_split(str(DATA_DIR), "train"), tokenizer)  # ~10 s: the whole train split


def test_full_train_truncation_counts_match_the_known_figures(tokenizer, train_encoded):
    assert len(train_encoded) == 12_460
    assert train_encoded.truncated_dialogues == 260  # 260 dialogues exceed 512 with the prompt
    assert max(train_encoded.input_lengths) == 512 and max(train_encoded.label_lengths) == 128
    at_cap = [i for i, n in enumerate(train_encoded.label_lengths) if n == 128]
    summaries = [ex.references[0] for ex in load_split(str(DATA_DIR), "train")]
    raw = [len(tokenizer(summaries[i]).input_ids) for i in at_cap]
    assert 0 < train_encoded.truncated_summaries == sum(n > 128 for n in raw)


def test_truncation_keeps_the_question_and_eos_and_is_counted(tokenizer):
    examples = [Example(f"e{i}", " ".join(["apple"] * n), (" ".join(["pear"] * m),), "")
                for i, (n, m) in enumerate([(10, 5), (200, 5), (30, 90), (300, 300)])]
    enc = encode_for_training(examples, tokenizer, max_input_tokens=64, max_label_tokens=32)
    assert (enc.truncated_dialogues, enc.truncated_summaries) == (2, 2)
    assert max(enc.input_lengths) <= 64 and max(enc.label_lengths) == 32
    summary_ids = tokenizer("Summary:", add_special_tokens=False).input_ids
    for ids in enc.input_ids:  # the prompt's end survives: "... Summary: </s>"
        assert ids[-1 - len(summary_ids):-1] == summary_ids and ids[-1] == tokenizer.eos_token_id
    assert all(ids[-1] == tokenizer.eos_token_id for ids in enc.labels)
    assert enc.input_ids[0] == tokenizer("Summarize the following conversation.\n\n" + examples[0].dialogue
                                         + "\n\nSummary: ").input_ids  # short inputs are the plain prompt


def test_labels_carry_minus_100_exactly_at_padding(train_encoded):
    batch = [0, 1, 2, 3, 4, 5, 6, 7]
    out = collate([train_encoded.input_ids[i] for i in batch], [train_encoded.labels[i] for i in batch])
    in_len = torch.tensor([train_encoded.input_lengths[i] for i in batch])
    lab_len = torch.tensor([train_encoded.label_lengths[i] for i in batch])
    positions_in, positions_lab = torch.arange(out["input_ids"].shape[1]), torch.arange(out["labels"].shape[1])
    is_pad_in, is_pad_lab = positions_in[None] >= in_len[:, None], positions_lab[None] >= lab_len[:, None]
    assert torch.equal(out["labels"] == -100, is_pad_lab) and is_pad_lab.any()
    assert torch.equal(out["attention_mask"] == 0, is_pad_in) and torch.all(out["input_ids"][is_pad_in] == 0)
    assert out["labels"].shape[1] == lab_len.max() and out["input_ids"].shape[1] == in_len.max()  # dynamic padding
    assert out["labels"][0, : lab_len[0]].tolist() == train_encoded.labels[0]


def test_length_grouped_batches_waste_little_on_padding(train_encoded):
    inputs, labels = train_encoded.input_lengths, train_encoded.label_lengths
    batches = length_grouped_batches(inputs, batch_size=8, seed=42, epoch=0)
    grouped = padding_fraction(batches, inputs, labels)
    everything_to_max = 1 - (sum(inputs) + sum(labels)) / (len(inputs) * (512 + 128))
    in_file_order = padding_fraction([list(range(i, min(i + 8, len(inputs)))) for i in range(0, len(inputs), 8)],
                                     inputs, labels)
    assert grouped < 0.10 < in_file_order and 0.55 < everything_to_max < 0.60  # 58%, as docs/NOTES.md says


def test_batches_are_deterministic_differ_by_epoch_and_cover_each_example_once(train_encoded):
    lengths = train_encoded.input_lengths
    epoch0 = length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert epoch0 == length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert epoch0 != length_grouped_batches(lengths, 8, seed=1, epoch=1)
    assert epoch0 != length_grouped_batches(lengths, 8, seed=2, epoch=0)
    for batches in (epoch0, length_grouped_batches(lengths, 8, seed=1, epoch=1)):
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert sorted(len(b) for b in batches)[1:] == [8] * (len(batches) - 1)  # 12,460 = 1,557 x 8 + 4


def test_each_rank_gets_a_disjoint_share_and_all_ranks_make_the_single_process_batches(train_encoded):
    lengths = train_encoded.input_lengths
    single = length_grouped_batches(lengths, 8, seed=3, epoch=2)
    shares = [length_grouped_batches(lengths, 8, seed=3, epoch=2, rank=r, world_size=2) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(single)
    for whole, a, b in zip(single, *shares):
        assert not set(a) & set(b) and sorted(a + b) == sorted(whole)
        assert len(a) == len(b) == len(whole) // 2
    with pytest.raises(ValueError, match="must split evenly over the 3 processes"):
        length_grouped_batches(lengths, 8, seed=3, epoch=0, rank=0, world_size=3)


def test_a_last_batch_too_small_to_share_is_left_out_only_with_several_ranks():
    lengths = list(range(9))  # batch 4 over 2 ranks: batches of 4, 4 and 1
    assert sum(map(len, length_grouped_batches(lengths, 4, seed=0, epoch=0))) == 9
    shares = [length_grouped_batches(lengths, 4, seed=0, epoch=0, rank=r, world_size=2) for r in (0, 1)]
    assert [len(b) for b in shares[0]] == [len(b) for b in shares[1]] == [2, 2]


def test_padding_fraction_counts_pad_slots_over_all_slots():
    assert padding_fraction([[0, 1]], [2, 4]) == pytest.approx(2 / 8)
    assert padding_fraction([[0, 1], [2]], [2, 4, 5], [1, 3, 3]) == pytest.approx((2 + 0 + 2 + 0) / (8 + 5 + 6 + 3))

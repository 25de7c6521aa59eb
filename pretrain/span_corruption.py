"""T5's pretraining objective, span corruption (Raffel et al. 2020, arXiv:1910.10683, section 3.1.4).

Pick 15% of a text's tokens in spans of mean length 3. In the input, each span becomes one sentinel; the target
lists each sentinel followed by the tokens it replaced. The paper's example:

    original: Thank you for inviting me to your party last week .
    input:    Thank you <X> me to your party <Y> week .
    target:   <X> for inviting <Y> last <Z>

The sentinels are FLAN-T5's `<extra_id_0>` = id 32099, `<extra_id_1>` = 32098, ... counting down. The spans are
drawn as the reference code draws them (`random_spans_noise_mask` in google-research/text-to-text-transfer-
transformer, t5/data/preprocessors.py): the number of masked tokens and of spans is fixed by the length, and both
the masked and the kept tokens are cut into that many non-empty pieces at random, kept piece first.
"""
from __future__ import annotations

import numpy as np

NOISE_DENSITY = 0.15     # share of tokens masked
MEAN_SPAN_LENGTH = 3.0   # mean length of a masked span
FIRST_SENTINEL = 32099   # <extra_id_0> in FLAN-T5's vocabulary; <extra_id_k> = 32099 - k


def random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """`num_items` cut into `num_segments` non-empty pieces at random. Shape: (num_segments,), sums to num_items."""
    cuts = rng.permutation(num_items - 1) < num_segments - 1          # (num_items - 1,): which gaps are cuts
    segment_of_item = np.concatenate([[0], np.cumsum(cuts)])          # (num_items,)
    return np.bincount(segment_of_item, minlength=num_segments)


def noise_mask(length: int, rng: np.random.Generator, density: float = NOISE_DENSITY,
               mean_span: float = MEAN_SPAN_LENGTH) -> np.ndarray:
    """Which of `length` tokens are masked. Shape: (length,) bool; alternating kept and masked spans, kept first."""
    if length < 2:
        return np.zeros(length, dtype=bool)
    num_noise = min(max(round(length * density), 1), length - 1)
    num_spans = max(round(num_noise / mean_span), 1)
    noise_lengths = random_segmentation(num_noise, num_spans, rng)             # (num_spans,)
    kept_lengths = random_segmentation(length - num_noise, num_spans, rng)     # (num_spans,)
    interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)  # kept, noise, kept, noise, ...
    return np.repeat(np.arange(2 * num_spans) % 2 == 1, interleaved)


def corrupt(ids: list[int], rng: np.random.Generator, eos_id: int = 1) -> tuple[list[int], list[int]]:
    """(input ids, target ids) for one text's ids (without </s>); both end with </s>.

    The mask alternates kept span k, masked span k (k = 0, 1, ...): the input is kept_0 <s_0> kept_1 <s_1> ...,
    the target <s_0> masked_0 <s_1> masked_1 ..., with <s_k> = <extra_id_k>."""
    mask = noise_mask(len(ids), rng)                                   # (T,) bool
    starts = np.flatnonzero(np.diff(mask.astype(np.int8), prepend=-1))  # where each span begins
    inputs, targets = [], []
    for span, (begin, end) in enumerate(zip(starts, [*starts[1:], len(ids)])):
        tokens = ids[begin:end]
        if not mask[begin]:
            inputs += tokens                                           # kept span k
        else:
            sentinel = FIRST_SENTINEL - span // 2                      # masked span k = span 2k + 1
            inputs.append(sentinel)
            targets += [sentinel, *tokens]
    return inputs + [eos_id], targets + [eos_id]


def restore(inputs: list[int], targets: list[int], eos_id: int = 1) -> list[int]:
    """The original ids back from a corrupted pair: each sentinel in the input replaced by what follows it in the
    target. (For tests: `restore(*corrupt(ids, rng)) == ids`.)"""
    filled, pieces, current = [], {}, None
    for token in targets[:-1]:
        if token > FIRST_SENTINEL - 100 and token <= FIRST_SENTINEL:
            current = pieces.setdefault(token, [])
        elif current is not None:
            current.append(token)
    for token in inputs[:-1]:
        filled += pieces.get(token, []) if FIRST_SENTINEL - 100 < token <= FIRST_SENTINEL else [token]
    return filled

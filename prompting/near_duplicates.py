"""The same dialogue in two splits, exactly or nearly: normalised text, word shingles, Jaccard similarity.

A test dialogue that is also in train measures memory, not summarisation. Two copies of a dialogue rarely agree
byte for byte (a space, a capital, another speaker label), so both checks compare *normalised* text: speaker
labels at the start of a line (DialogSum's `#Person1#:`, SAMSum's `Amanda:`) dropped, lower case, every run of
non-word characters one space (`normalise`).

* **Exact**: two normalised texts are equal (a dict from text to rows: linear time).
* **Near**: the Jaccard similarity |A & B| / |A | B| of the two dialogues' sets of word 5-grams ("shingles",
  Broder 1997) is at least 0.8: Lee et al. 2022, "Deduplicating Training Data Makes Language Models Better",
  section 4.1, call documents near duplicates at that threshold of 5-gram Jaccard (they estimate it with MinHash
  for web-scale data). A dialogue of fewer than 5 words is one shingle, its whole text.

Comparing every pair would be 12,460 x 2,000 set intersections on DialogSum. Instead each split's shingles go into
an inverted index (shingle -> the dialogues that hold it), and a dialogue of an earlier split counts, through the
index of each later split, how many shingles it shares with each dialogue there: only dialogues sharing at least
one shingle are ever looked at, and the counts give the exact Jaccard, no estimate.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import NamedTuple, Sequence

SHINGLE_WORDS = 5
NEAR_THRESHOLD = 0.8
# A speaker label at the start of a line: "#Person1#:" or a name of up to 40 characters ("Amanda:", "Dr. Lee:").
SPEAKER_LABEL = re.compile(r"^[ \t]*(?:#[^#\n]{1,20}#|[^\W\d][\w .'-]{0,39}?)[ \t]*:", re.M)
NOT_A_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """"#Person1#: Hi, Tom!\\n#Person2#: HI." -> "hi tom hi"."""
    return NOT_A_WORD.sub(" ", SPEAKER_LABEL.sub(" ", text).lower()).strip()


def shingles(normalised: str, n: int = SHINGLE_WORDS) -> frozenset[tuple[str, ...]]:
    words = normalised.split()
    if len(words) < n:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class Pair(NamedTuple):
    """Dialogue i of split_a and dialogue j of split_b, and their similarity (1.0 when exact)."""
    split_a: str
    i: int
    split_b: str
    j: int
    similarity: float


def exact_pairs(texts: dict[str, Sequence[str]]) -> list[Pair]:
    """Every pair of dialogues in two different splits whose normalised texts are equal (empty ones left out)."""
    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for split, split_texts in texts.items():
        for i, text in enumerate(split_texts):
            key = normalise(text)
            if key:
                seen[key].append((split, i))
    return [Pair(a, i, b, j, 1.0) for rows in seen.values() for k, (a, i) in enumerate(rows)
            for b, j in rows[k + 1:] if a != b]


def near_pairs(texts: dict[str, Sequence[str]], threshold: float = NEAR_THRESHOLD,
               n: int = SHINGLE_WORDS) -> list[Pair]:
    """Every pair in two different splits with a shingle Jaccard of at least `threshold`, exact ones included."""
    sets = {split: [shingles(normalise(t), n) for t in split_texts] for split, split_texts in texts.items()}
    splits = list(sets)
    pairs = []
    for later, split_b in enumerate(splits[1:], start=1):
        index: dict[tuple, list[int]] = defaultdict(list)  # shingle -> the dialogues of split_b that hold it
        for j, s in enumerate(sets[split_b]):
            for shingle in s:
                index[shingle].append(j)
        for split_a in splits[:later]:
            for i, a in enumerate(sets[split_a]):
                shared = Counter(j for shingle in a for j in index.get(shingle, ()))  # j -> |A & B|
                for j, both in shared.items():
                    similarity = both / (len(a) + len(sets[split_b][j]) - both)  # |A & B| / |A | B|
                    if similarity >= threshold:
                        pairs.append(Pair(split_a, i, split_b, j, round(similarity, 4)))
    return pairs

"""How varied a data set is: distinct n-grams, vocabulary, question types, answer lengths, near-duplicates.

    report = diversity(samples)          # {"all": {...}, "conversation": {...}, ...}

distinct-n    unique word n-grams / all word n-grams of the answers (1.0: nothing repeats)
near-dup      share of questions (answers) with another one whose word 3-grams overlap it by
              Jaccard >= 0.8 (MinHash with banding finds the candidates, each pair is then
              checked exactly); identical texts count too
exact-dup     share of questions asked word for word elsewhere in the set
"""

from __future__ import annotations

import re
import zlib
from collections import Counter

import numpy as np

from vinstruct.audit.question import QUESTION_TYPES, question_type
from vinstruct.audit.run import IMAGE_MARKER, sample_type

NEAR_DUPLICATE_JACCARD = 0.8
_WORD = re.compile(r"[a-z0-9]+")
_PRIME = (1 << 61) - 1
_BANDS, _ROWS = 8, 2  # 16 hash functions; pairs at Jaccard 0.8 share a band with probability ~0.9995
_MAX_BUCKET_CHECKS = 20  # pairs checked per member of one band bucket (huge buckets are copies of one template)
LENGTH_BINS = (0, 5, 10, 20, 40, 80, 160, 320, 10**9)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _shingles(tokens: list[str], n: int = 3) -> set[int]:
    n = min(n, len(tokens)) or 1
    return {zlib.crc32(" ".join(tokens[i:i + n]).encode()) for i in range(max(len(tokens) - n + 1, 1))}


def near_duplicate_share(texts: list[str]) -> tuple[float | None, int]:
    """(share of texts with a near-duplicate, how many have one)."""
    if len(texts) < 2:
        return (0.0 if texts else None), 0
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(" ".join(words(text)), []).append(i)
    flagged = np.zeros(len(texts), dtype=bool)
    uniques = list(groups)
    for members in groups.values():
        if len(members) > 1:
            flagged[members] = True
    sets = [_shingles(u.split()) for u in uniques]
    rng = np.random.default_rng(0)
    a = rng.integers(1, _PRIME, size=_BANDS * _ROWS, dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=_BANDS * _ROWS, dtype=np.uint64)
    signatures = np.empty((len(uniques), _BANDS * _ROWS), dtype=np.uint64)
    for i, shingles in enumerate(sets):
        x = np.fromiter(shingles, dtype=np.uint64, count=len(shingles))
        # (a*x + b) mod p, in uint64 arithmetic that wraps: a stable hash family, enough for banding.
        signatures[i] = ((a[:, None] * x[None, :] + b[:, None]) % np.uint64(_PRIME)).min(axis=1)
    near = np.zeros(len(uniques), dtype=bool)
    for band in range(_BANDS):
        buckets: dict[bytes, list[int]] = {}
        block = signatures[:, band * _ROWS:(band + 1) * _ROWS]
        for i in range(len(uniques)):
            buckets.setdefault(block[i].tobytes(), []).append(i)
        for members in buckets.values():
            for k, i in enumerate(members):
                for j in members[k + 1:k + 1 + _MAX_BUCKET_CHECKS]:
                    if near[i] and near[j]:
                        continue
                    union = len(sets[i] | sets[j])
                    if union and len(sets[i] & sets[j]) / union >= NEAR_DUPLICATE_JACCARD:
                        near[i] = near[j] = True
    for unique, is_near in zip(uniques, near):
        if is_near:
            flagged[groups[unique]] = True
    count = int(flagged.sum())
    return round(count / len(texts), 4), count


def distinct_n(token_lists: list[list[str]], n: int) -> float | None:
    seen, total = set(), 0
    for tokens in token_lists:
        grams = [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return round(len(seen) / total, 4) if total else None


LENGTH_BIN_NAMES = [f"{lo}-{hi - 1}" if hi < 10**9 else f"{lo}+" for lo, hi in zip(LENGTH_BINS, LENGTH_BINS[1:])]


def length_histogram(lengths: list[int]) -> dict[str, int]:
    """Answers per length bin (words): 0-4, 5-9, 10-19, ..., 320+."""
    index = np.searchsorted(LENGTH_BINS, np.asarray(lengths, dtype=np.int64), side="right") - 1
    counts = np.bincount(index, minlength=len(LENGTH_BIN_NAMES))[:len(LENGTH_BIN_NAMES)]
    return dict(zip(LENGTH_BIN_NAMES, counts.tolist()))


def _measure(questions: list[str], answers: list[str]) -> dict:
    answer_words = [words(a) for a in answers]
    question_words = [words(q) for q in questions]
    lengths = [len(w) for w in answer_words]
    vocabulary = set().union(*answer_words, *question_words) if answers or questions else set()
    types = Counter(question_type(q) for q in questions)
    exact = Counter(" ".join(w) for w in question_words)
    near_answers, _ = near_duplicate_share(answers)
    near_questions, _ = near_duplicate_share(questions)
    return {
        "questions": len(questions), "answers": len(answers),
        "distinct_1": distinct_n(answer_words, 1), "distinct_2": distinct_n(answer_words, 2),
        "distinct_3": distinct_n(answer_words, 3), "vocabulary": len(vocabulary),
        "answer_words_mean": round(float(np.mean(lengths)), 1) if lengths else None,
        "answer_words_median": float(np.median(lengths)) if lengths else None,
        "answer_lengths": length_histogram(lengths),
        "question_types": {t: types[t] for t in QUESTION_TYPES if types[t]},
        "exact_duplicate_questions": round(sum(n for n in exact.values() if n > 1) / len(questions), 4) if questions else None,
        "near_duplicate_questions": near_questions, "near_duplicate_answers": near_answers,
        "top_questions": [[q, n] for q, n in exact.most_common(5) if n > 1],
    }


def diversity(samples: list[dict]) -> dict:
    """Diversity measures over all samples and per data type (question/answer pairs of the gpt turns)."""
    by_type: dict[str, tuple[list, list]] = {}
    for sample in samples:
        turns = sample.get("conversations") or []
        pairs = by_type.setdefault(sample_type(sample), ([], []))
        question = None
        for turn in turns:
            text = turn.get("value") if isinstance(turn, dict) else None
            if not isinstance(text, str):
                continue
            if turn.get("from") == "human":
                question = text.replace(IMAGE_MARKER, " ").strip()
            elif text.strip():
                if question:
                    pairs[0].append(question)
                pairs[1].append(text)
                question = None
    out = {"all": _measure([q for qs, _ in by_type.values() for q in qs], [a for _, ans in by_type.values() for a in ans])}
    for data_type, (questions, answers) in sorted(by_type.items()):
        out[data_type] = _measure(questions, answers)
    return out

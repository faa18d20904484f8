"""The competition metric and the seed's per-sample score (plain Levenshtein, not Damerau)."""

from __future__ import annotations

from typing import Sequence

from rapidfuzz.distance import Levenshtein


def competition_score(predictions: Sequence[str], targets: Sequence[str]) -> float:
    """(N - D) / N over the whole set: N total target characters, D total edit distance."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    n = sum(len(t) for t in targets)
    if n == 0:
        raise ValueError("targets hold no characters")
    d = sum(Levenshtein.distance(p, t) for p, t in zip(predictions, targets))
    return (n - d) / n


def sample_score(prediction: str, target: str) -> float:
    """1 - normalised distance for one sample (SEED-SPEC 7.2): higher is better, can be negative."""
    if not target:
        raise ValueError("empty target")
    return (len(target) - Levenshtein.distance(prediction, target)) / len(target)

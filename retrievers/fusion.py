"""Relative score fusion for hybrid search: Weaviate's default, so both backends rank the same way.

Each leg's scores are min-max normalised to [0, 1] (best = 1; a leg whose scores are all equal gives 1), then
``alpha * vector + (1 - alpha) * keyword``; a hit missing from one leg scores 0 there.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

Hit = TypeVar("Hit")


def normalise(scores: Sequence[float]) -> list[float]:
    """Min-max to [0, 1], higher is better; all-equal scores (one hit, say) become 1."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if high == low:
        return [1.0] * len(scores)
    return [(score - low) / (high - low) for score in scores]


def relative_score_fusion(
    vector_hits: Sequence[tuple[Hashable, Hit, float]],
    keyword_hits: Sequence[tuple[Hashable, Hit, float]],
    *,
    alpha: float,
    k: int,
) -> list[tuple[Hit, float]]:
    """Top-k (hit, fused score), best first. Hits are (key, hit, raw score), raw scores higher = better.

    Ties keep the vector leg's order, then the keyword leg's.
    """
    fused: dict[Hashable, list] = {}
    for weight, hits in ((alpha, vector_hits), (1.0 - alpha, keyword_hits)):
        for (key, hit, _), score in zip(hits, normalise([raw for _, _, raw in hits]), strict=True):
            entry = fused.setdefault(key, [hit, 0.0])
            entry[1] += weight * score
    ranked = sorted(fused.values(), key=lambda entry: -entry[1])
    return [(hit, score) for hit, score in ranked[:k]]

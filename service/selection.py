"""The rule every ranked answer of the service obeys, written once: walk the candidates nearest
first, keep only the nearest tracklet of each identity when grouping, stop at the first one
farther than the open-set cut, and stop at ``top_k``.

Both gallery backends apply it to their index's answers and the re-scorer to the pair
distances, so a query means the same with and without re-scoring, on either backend.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

Item = TypeVar("Item")

#: Above this a distance's square overflows a float; no two embeddings are that far apart.
_LARGEST_SQUARABLE = math.sqrt(1.7e308)


def squared_limit(max_distance: float | None) -> float | None:
    """The open-set cut on squared distances, as the index backends compare them: a cut too
    large to square is no cut at all (infinity), never an overflow."""
    if max_distance is None:
        return None
    return math.inf if max_distance > _LARGEST_SQUARABLE else float(max_distance) ** 2


def select_nearest(
    ranked: Iterable[tuple[str, float, Item]],
    top_k: int,
    *,
    group_by_identity: bool,
    limit: float | None,
    seen: set[str] | None = None,
) -> tuple[list[Item], bool]:
    """The items kept from ``ranked`` (``(identity, distance, item)``, nearest first), and
    whether the walk reached past ``limit`` (then a longer candidate list could add nothing).

    ``limit`` is compared with the distances exactly as given: the index backends pass squared
    distances and the squared ``max_distance``, so no square root decides a borderline case.
    ``seen`` carries the identities already kept by an earlier call (and is updated), for
    backends that search in rounds.
    """
    kept: list[Item] = []
    seen = set() if seen is None else seen
    for identity, distance, item in ranked:
        if limit is not None and distance > limit:
            return kept, True
        if group_by_identity:
            if identity in seen:
                continue
            seen.add(identity)
        kept.append(item)
        if len(kept) == top_k:
            break
    return kept, False

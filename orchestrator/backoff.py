"""How long to wait before the next attempt: exponential backoff with jitter, in one place."""

from __future__ import annotations

import random


def backoff(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``attempt + 1``: ``base * 2 ** (attempt - 1)``, at most
    ``cap``, times a random factor between ``1 - jitter`` and 1 (``jitter`` 1.0 is "full
    jitter", 0.0 none). Jitter spreads the retries of many workers that failed together."""
    delay = float(min(cap, base * 2.0 ** max(attempt - 1, 0)))
    if jitter <= 0:
        return delay
    factor: float = (rng or random).uniform(1.0 - jitter, 1.0)
    return delay * factor

"""A test hook that lets a test see a rotator reach a point in a step, and hold it there.

A rotator calls :meth:`StepHook.reach` at named points (``before_apply``, ``after_apply``...).
The hook RPUSHes ``test:reached:<point>`` on a Redis the test owns (so the test can BLPOP it to
know the worker is *inside* that step), and when the point is listed in ``hold``, blocks until
``test:release:<point>`` is pushed — long enough for the test to SIGKILL the worker there. A
point holds only once per rotation (``SET NX``), so the worker that resumes runs straight
through. Nothing of this exists in production code: only test rotators carry the hook.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

HOLD_SECONDS = 300


def reached_key(point: str) -> str:
    """List the hook RPUSHes the rotation id onto when a rotator reaches ``point``."""
    return f"test:reached:{point}"


def release_key(point: str) -> str:
    """List a test pushes onto to let a held rotator go on past ``point``."""
    return f"test:release:{point}"


def held_key(rotation_id: str, point: str) -> str:
    """Marker that ``point`` was held once for ``rotation_id`` (so a resume is not held)."""
    return f"test:held:{rotation_id}:{point}"


class StepHook:
    """Signals and holds at named points; a no-op when ``url`` is None."""

    def __init__(self, url: str | None, hold: Sequence[str] = ()) -> None:
        self.url = url
        self.hold = frozenset(hold)

    def reach(self, rotation_id: str, point: str) -> None:
        """Announce ``point``; block there once if it is held."""
        if self.url is None:
            return
        client = redis.Redis.from_url(self.url, socket_timeout=HOLD_SECONDS + 10)
        try:
            # Mark the hold before announcing it: the test may SIGKILL us right after the push.
            holding = point in self.hold and client.set(held_key(rotation_id, point), 1, nx=True)
            client.rpush(reached_key(point), rotation_id)
            if holding:
                client.blpop([release_key(point)], timeout=HOLD_SECONDS)
        finally:
            client.close()

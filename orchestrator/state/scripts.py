"""The Lua scripts of the state store, read from the ``.lua`` files in ``lua/`` beside this module.

Each file starts with a header naming what it does, its KEYS and ARGV and what it returns; every
key a script touches is passed in KEYS. A script whose header says "Uses the prelude" runs with
``lua/prelude.lua`` in front of it (Redis's clock, the run-state sets, field setting).
:func:`register` is the one way to get a script for a synchronous client; the receiver's
asyncio client runs :func:`source` through its own batcher.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

#: The header line of a script that runs with the prelude in front of it.
USES_PRELUDE = "Uses the prelude"


@cache
def source(name: str) -> str:
    """The full Lua text of script ``name`` (the prelude first, where its header asks for it)."""
    text = _read(name)
    header = " ".join(
        line.lstrip("-").strip() for line in text.splitlines() if line.startswith("--")
    )
    return _read("prelude") + text if USES_PRELUDE in header else text


def sha(name: str) -> str:
    """The SHA-1 Redis knows script ``name`` by (for ``EVALSHA``)."""
    return hashlib.sha1(source(name).encode(), usedforsecurity=False).hexdigest()


def register(client: redis.Redis, name: str) -> Script:
    """Script ``name`` bound to ``client``: call it with ``keys=`` and ``args=``; it is loaded
    into Redis on first use and again after a restart emptied the script cache."""
    return client.register_script(source(name))


def _read(name: str) -> str:
    return resources.files("orchestrator.state").joinpath("lua", f"{name}.lua").read_text("utf-8")

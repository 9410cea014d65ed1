"""The fake org's records (apps, consumers, pairs, staged entries, tokens, faults) and ids.

The ids, consumer keys and secrets are made the way Salesforce's look (prefixes, lengths).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(6).upper()[:15]


def new_key() -> str:
    return "3MVG9" + secrets.token_urlsafe(60)[:80]


def new_secret() -> str:
    return secrets.token_hex(32).upper()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


@dataclass
class Pair:
    """One consumer key and secret; ``usable_at`` models propagation delay."""

    key: str
    secret: str
    created: float
    usable_at: float


@dataclass
class Staged:
    """The consumer's one staged slot: a new pair (``Active``) or the previous one (``Rotated``)."""

    id: str
    pair: Pair
    state: str
    expires: float


@dataclass
class Consumer:
    id: str
    name: str
    primary: Pair
    permissions: list[str] = field(default_factory=list)
    staged: Staged | None = None


@dataclass
class App:
    id: str
    developer_name: str
    label: str
    kind: str  # "eca" (External Client App) or "connected_app" (classic)
    consumers: dict[str, Consumer] = field(default_factory=dict)


@dataclass
class Fault:
    match: str  # "METHOD glob" on the path, e.g. "POST */staged"
    kind: str  # a FAULT_KINDS key, or "hang" (apply the request, then stall before answering)
    count: int
    seconds: float = 0.0


@dataclass
class Token:
    app_id: str
    consumer_id: str
    issued: float

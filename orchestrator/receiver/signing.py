"""Webhook signatures: verify ``X-ScaiVault-Signature`` against every configured secret.

ScaiVault signs the raw body: the header is the lowercase hex HMAC-SHA256 keyed with the
subscription secret's UTF-8 bytes as written (``whsec_...``). During a rollover several secrets
are configured and the header may carry several signatures (comma or space separated); any
match is accepted. The header is parsed strictly (ASCII hex only, bounded length and count)
before any comparison, and digests are compared as bytes in constant time, so hostile headers
(non-ASCII, overlong, ``sha256=`` prefixes) are a plain 401
(:class:`~orchestrator.errors.WebhookRejected`), never a crash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

from orchestrator.errors import WebhookRejected

#: Longest signature header accepted (five signatures and separators fit comfortably).
MAX_HEADER_LENGTH = 1024

#: Most signatures one header may carry; bounds the HMAC work per request.
MAX_SIGNATURES = 5

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SEPARATORS = re.compile(r"[ ,]+")


def sign(body: bytes, secret: str | bytes) -> str:
    """The ``X-ScaiVault-Signature`` value ScaiVault sends for ``body`` (for tests and tools)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def parse_signatures(header: str | None) -> list[bytes]:
    """The 32-byte digests in a signature header; 401 if it is missing or malformed."""
    if not header or len(header) > MAX_HEADER_LENGTH:
        raise _unauthorized("signature_missing" if not header else "signature_malformed")
    parts = [part for part in _SEPARATORS.split(header.strip().lower()) if part]
    if not parts or len(parts) > MAX_SIGNATURES:
        raise _unauthorized("signature_malformed")
    if not all(_HEX64.fullmatch(part) for part in parts):
        raise _unauthorized("signature_malformed")
    return [bytes.fromhex(part) for part in parts]


def verify(body: bytes, header: str | None, secrets: Sequence[bytes]) -> int:
    """Return the position (1-based) of the secret whose signature matches; 401 if none does.

    Every secret is tried against every signature, so the time taken does not reveal which
    (if any) matched.
    """
    if not secrets:
        raise ValueError("no webhook secret configured: refusing to verify (fail closed)")
    provided = parse_signatures(header)
    matched = 0
    for position, secret in enumerate(secrets, start=1):
        expected = hmac.new(secret, body, hashlib.sha256).digest()
        for digest in provided:
            if hmac.compare_digest(expected, digest) and not matched:
                matched = position
    if not matched:
        raise _unauthorized("signature_mismatch")
    return matched


def _unauthorized(reason: str) -> WebhookRejected:
    return WebhookRejected(401, reason)

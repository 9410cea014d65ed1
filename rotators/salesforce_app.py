"""An External Client App's consumers and staged-credentials slot, through an admin connection.

The ``apps/oauth/credentials`` Connect REST resources (API 65.0+) as the ``salesforce-oauth``
rotator uses them: list the app's consumers, read, stage, promote and delete staged entries,
and read a consumer's primary pair. Consumer secrets are wrapped in
:class:`~rotators.secret.Secret` as soon as they are read; logs name a key by :func:`key_hint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rotators.errors import PermanentError
from rotators.salesforce_client import NotFound, SalesforceConnection
from rotators.secret import Secret


@dataclass(frozen=True)
class StagedEntry:
    """One staged-slot entry; ``secret`` is wrapped so it never prints."""

    id: str
    key: str
    secret: Secret
    state: str
    expires: str = ""


def key_hint(key: str) -> str:
    """A loggable fingerprint of a consumer key: its last four characters."""
    return "..." + key[-4:]


def credential_pair(data: Mapping[str, Any], what: str) -> tuple[str, Secret]:
    """``client_id`` and the wrapped ``client_secret`` of secret data (``what`` names it)."""
    client_id, secret = data.get("client_id"), data.get("client_secret")
    if not isinstance(client_id, str) or not isinstance(secret, str) or not client_id:
        raise PermanentError(f"{what} secret data needs string fields client_id and client_secret")
    return client_id, Secret(secret)


class OrgApp:
    """The app's consumers and staged slot, through an admin connection.

    ``consumer_id``, when given, narrows :meth:`find_consumer` to that consumer.
    """

    def __init__(
        self, conn: SalesforceConnection, app_id: str, consumer_id: str | None = None
    ) -> None:
        self.conn = conn
        self.app_id = app_id
        self.consumer_id = consumer_id
        self.base = f"apps/oauth/credentials/{app_id}"

    def consumers(self) -> list[dict[str, Any]]:
        try:
            body = self.conn.rest("list consumers", self.base)
        except NotFound:
            raise self._not_an_eca() from None
        return [dict(c) for c in (body or {}).get("consumers", [])]

    def _not_an_eca(self) -> PermanentError:
        apps = (self.conn.rest("list apps", "apps/oauth/usage") or {}).get("apps", [])
        if any(a.get("identifier") == self.app_id for a in apps):
            return PermanentError(f"app {self.app_id} has no OAuth credentials resource")
        return PermanentError(
            f"app {self.app_id} is not found among External Client Apps. A classic "
            "Connected App has no API to rotate its consumer secret: migrate it (App Manager > "
            "Migrate to External Client App) and set app_id to the new app's id"
        )

    def staged(self, consumer_id: str) -> list[StagedEntry]:
        body = self.conn.rest("read staged credentials", f"{self.base}/{consumer_id}/staged")
        return [_entry(e) for e in (body or {}).get("stagedCredentials", [])]

    def stage(self, consumer_id: str) -> StagedEntry | None:
        # An empty body makes real Salesforce hang; send {}. Never retried blindly: the next
        # attempt re-reads the slot to learn whether this POST took effect.
        body = self.conn.rest(
            "stage credentials", f"{self.base}/{consumer_id}/staged", method="POST", json={}
        )
        entries = (body or {}).get("stagedCredentials", [])
        return _entry(entries[0]) if entries else None

    def promote(self, consumer_id: str, staged_id: str) -> None:
        self.conn.rest(
            "promote staged credentials",
            f"{self.base}/{consumer_id}/staged/{staged_id}",
            method="PATCH",
            json={"command": "rotate"},
        )

    def delete(self, consumer_id: str, staged_id: str) -> bool:
        """Delete a staged entry; False if it was already gone (404)."""
        try:
            self.conn.rest(
                "delete staged credentials",
                f"{self.base}/{consumer_id}/staged/{staged_id}",
                method="DELETE",
            )
        except NotFound:
            return False
        return True

    def primary(self, consumer_id: str) -> tuple[str, Secret]:
        body = self.conn.rest(
            "read primary credentials",
            f"{self.base}/{consumer_id}",
            params={"part": "keyandsecret"},
        )
        return credential_pair(
            {"client_id": body.get("key"), "client_secret": body.get("secret")}, "primary"
        )

    def find_consumer(self, key: str) -> tuple[dict[str, Any], StagedEntry | None]:
        """The consumer whose primary key is ``key``, else the one holding ``key`` in its slot."""
        consumers = self.consumers()
        if self.consumer_id is not None:
            consumers = [c for c in consumers if c.get("id") == self.consumer_id]
            if not consumers:
                raise PermanentError(
                    f"consumer_id {self.consumer_id} not found in app {self.app_id}"
                )
        for consumer in consumers:
            if consumer.get("key") == key:
                return consumer, None
        for consumer in consumers:
            for entry in self.staged(str(consumer["id"])):
                if entry.key == key:
                    return consumer, entry
        raise PermanentError(
            f"client_id {key_hint(key)} is neither a consumer key of app {self.app_id} "
            "nor in a staged slot; was it rotated outside scaivault-rotator?"
        )


def _entry(raw: Mapping[str, Any]) -> StagedEntry:
    return StagedEntry(
        id=str(raw.get("id", "")),
        key=str(raw.get("key", "")),
        secret=Secret(str(raw.get("secret") or "")),
        state=str(raw.get("state", "")),
        expires=str(raw.get("expirationDate") or ""),
    )

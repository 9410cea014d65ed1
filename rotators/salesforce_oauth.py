"""The ``salesforce-oauth`` rotator: an External Client App's consumer key and secret.

Uses the OAuth staged-credentials Connect REST resources (API 65.0+) through
:class:`~rotators.salesforce_app.OrgApp`. *mint* stages a new pair, waits until the token
endpoint accepts it (propagation), promotes it with ``{"command": "rotate"}`` and returns
``{"client_id", "client_secret"}`` (other fields kept). The old pair stays valid in the
staged slot as ``Rotated`` until *finalize* deletes it.

A crash anywhere is recoverable: before it waits for propagation and promotes, mint notes
(``ctx.notes``) the staged entry's id and a fingerprint of its key. A resumed mint adopts an
``Active`` entry only if it is the one this rotation noted (any other was never stored
anywhere: it is deleted and a fresh pair staged), and takes "the ScaiVault ``client_id`` sits
in the slot as ``Rotated``" for its own promotion only if the primary's key is the one it
noted; the new primary is then re-read with ``?part=keyandsecret``. Whatever else sits in the
slot is never adopted: after a rollback the slot holds the restored pair as ``Rotated`` and the
primary is the pair rolled back, and a new rotation must not store that pair again (it fails
and says what to do). A stage is never re-POSTed blindly.

The rotator authenticates as a *separate* admin credential read from ``admin_secret_path`` and
refuses to rotate that credential itself.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from rotators.contract import RotationContext, Rotator
from rotators.errors import PermanentError, TransientError
from rotators.salesforce_app import OrgApp, StagedEntry, credential_pair, key_hint
from rotators.salesforce_client import CredentialRefused, SalesforceConnection
from rotators.salesforce_options import SalesforceOAuthOptions
from rotators.secret import Secret, SecretData
from rotators.versions import finalize_due

#: ``ctx.notes`` names: the staged entry this rotation promotes, and its key's fingerprint.
NOTE_STAGED_ID = "staged_id"
NOTE_STAGED_KEY = "staged_key_sha256"


def key_fingerprint(key: str) -> str:
    """A consumer key's fingerprint for a note: the first 16 hex digits of its sha256."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


#: What this rotator's steps receive.
Context = RotationContext[SalesforceOAuthOptions]


class SalesforceOAuthRotator(Rotator[SalesforceOAuthOptions]):
    """Rotates ``{"client_id", "client_secret"}`` of a Salesforce External Client App."""

    name = "salesforce-oauth"
    strategy = "issuer"
    can_discard = True
    Options = SalesforceOAuthOptions
    verify_timeout = 120.0

    def target(self, options: SalesforceOAuthOptions) -> str:
        """The org, by its My Domain host: rules on one org share its budget."""
        return urlsplit(options.my_domain_url).hostname or options.my_domain_url

    # --- steps --------------------------------------------------------------------------

    def mint(self, ctx: Context) -> dict[str, Any]:
        """Stage (or adopt), check, promote; return the new primary with the other fields kept."""
        options = ctx.options
        old_id, _ = credential_pair(ctx.current.data, "current")
        with self._admin(ctx, options, rotating=old_id) as conn:
            self._check_budget(conn, options)
            app = OrgApp(conn, options.app_id, options.consumer_id)
            consumer, slot_entry = app.find_consumer(old_id)
            consumer_id = str(consumer["id"])
            if slot_entry is None:
                staged = self._stage_or_adopt(ctx, app, consumer_id)
                self._await_propagation(ctx, conn, staged, options)
                app.promote(consumer_id, staged.id)
                ctx.log.info("salesforce_promoted", consumer_id=consumer_id, staged_id=staged.id)
                new_id, new_secret = self._promoted_primary(ctx, app, consumer_id, old_id)
            elif slot_entry.state == "Rotated":
                new_id, new_secret = self._promotion_found(ctx, app, consumer_id, slot_entry)
            else:
                raise PermanentError(
                    f"client_id {key_hint(old_id)} sits in the staged slot as {slot_entry.state}, "
                    "not as the primary: the app was changed outside scaivault-rotator"
                )
        ctx.log.info("salesforce_minted", consumer_id=consumer_id, key_hint=key_hint(new_id))
        return {**ctx.current.data, "client_id": new_id, "client_secret": new_secret.reveal()}

    def verify(self, ctx: Context, new: SecretData) -> None:
        """A token request with the new pair, then one cheap authorised call (``limits``).

        ``invalid_client`` for the pair this rotation staged (its noted fingerprint) is
        propagation, and transient; for any other pair it is final: nothing will make
        Salesforce accept a pair it does not hold.
        """
        options = ctx.options
        client_id, secret = credential_pair(new, "new")
        conn = SalesforceConnection(options.connection())
        try:
            try:
                token = conn.token(client_id, secret)
            except CredentialRefused:
                if key_fingerprint(client_id) == ctx.notes.get(NOTE_STAGED_KEY):
                    raise TransientError(
                        "the token endpoint does not accept the new credential yet (invalid_client)"
                    ) from None
                raise PermanentError(
                    f"the token endpoint refuses client_id {key_hint(client_id)} "
                    "(invalid_client), which this rotation did not stage"
                ) from None
            if urlsplit(token.instance_url).hostname != urlsplit(options.my_domain_url).hostname:
                raise PermanentError("the token's instance_url is not my_domain_url's host")
            limits = conn.probe(token)
        finally:
            conn.close()
        remaining = limits.get("DailyApiRequests", {}).get("Remaining")
        ctx.log.info("salesforce_verified", key_hint=key_hint(client_id), api_remaining=remaining)

    def finalize(self, ctx: Context, old: SecretData, new: SecretData) -> None:
        """Delete the ``Rotated`` entry holding the old key, then check the old pair is refused."""
        options = ctx.options
        old_id, old_secret = credential_pair(old, "old")
        new_id, _ = credential_pair(new, "new")
        if old_id == new_id:
            raise PermanentError("old and new client_id are the same: nothing to revoke safely")
        with self._admin(ctx, options, rotating=old_id) as conn:
            app = OrgApp(conn, options.app_id, options.consumer_id)
            consumer, _ = app.find_consumer(new_id)
            if consumer.get("key") == old_id:
                raise PermanentError("the old client_id is still the primary; refusing to revoke")
            consumer_id = str(consumer["id"])
            for entry in app.staged(consumer_id):
                if entry.key != old_id:
                    continue
                if entry.state == "Active":
                    raise PermanentError("the old key is staged as Active; refusing to delete it")
                deleted = app.delete(consumer_id, entry.id)
                ctx.log.info(
                    "salesforce_old_deleted",
                    consumer_id=consumer_id,
                    staged_id=entry.id,
                    deleted=deleted,
                )
            try:
                conn.token(old_id, old_secret)
            except CredentialRefused:
                ctx.log.info("salesforce_finalized", key_hint=key_hint(old_id))
                return
        raise TransientError("the old credential is still accepted after its deletion; re-checking")

    def discard(self, ctx: Context, new: SecretData) -> None:
        """Delete ``new`` if it is still only staged.

        A promoted pair cannot be un-rotated: raises :class:`PermanentError` saying so (the
        pair stays valid), so a caller never reports it revoked.
        """
        options = ctx.options
        new_id, _ = credential_pair(new, "new")
        with self._admin(ctx, options, rotating=new_id) as conn:
            app = OrgApp(conn, options.app_id, options.consumer_id)
            consumer, entry = app.find_consumer(new_id)
            if entry is not None and entry.state == "Active":
                app.delete(str(consumer["id"]), entry.id)
                ctx.log.info("salesforce_discarded", staged_id=entry.id, key_hint=key_hint(new_id))
                return
        ctx.log.warning(
            "salesforce_discard_skipped",
            key_hint=key_hint(new_id),
            reason="the pair is the app's primary; Salesforce has no un-rotate",
        )
        raise PermanentError(
            f"client_id {key_hint(new_id)} is the app's primary pair and Salesforce cannot "
            "un-rotate it: it stays valid, and the pair it replaced stays valid only as the "
            "Rotated staged entry (~30 days); a new rotation never adopts it and says what to do"
        )

    # --- helpers ----------------------------------------------------------------------------

    @contextmanager
    def _admin(
        self, ctx: Context, options: SalesforceOAuthOptions, rotating: str
    ) -> Iterator[SalesforceConnection]:
        """An admin connection; refuses when the credential rotated is the admin's own."""
        if options.admin_secret_path.strip("/") == ctx.path.strip("/"):
            raise PermanentError("admin_secret_path is the secret being rotated (self-rotation)")
        admin_id, admin_secret = credential_pair(
            ctx.vault.read(options.admin_secret_path).data, "admin"
        )
        if admin_id == rotating:
            raise PermanentError(
                "refusing to rotate the credential the rotator authenticates with; use a "
                "separate admin identity at admin_secret_path"
            )
        conn = SalesforceConnection(options.connection())
        try:
            conn.login(admin_id, admin_secret)
            yield conn
        finally:
            conn.close()

    def _check_budget(self, conn: SalesforceConnection, options: SalesforceOAuthOptions) -> None:
        if options.min_api_remaining <= 0:
            return
        limits = conn.rest("limits", "limits/") or {}
        remaining = int(limits.get("DailyApiRequests", {}).get("Remaining", 0))
        if remaining < options.min_api_remaining:
            raise TransientError(
                f"only {remaining} daily API calls left (min_api_remaining "
                f"{options.min_api_remaining}); waiting for the budget to recover",
                retry_after=options.limit_backoff,
            )

    def _promoted_primary(
        self, ctx: Context, app: OrgApp, consumer_id: str, old_id: str
    ) -> tuple[str, Secret]:
        """The primary right after this rotation's promotion: the pair it noted."""
        new_id, new_secret = app.primary(consumer_id)
        if new_id == old_id:
            raise TransientError("the promoted pair is not the primary yet")
        if key_fingerprint(new_id) != ctx.notes.get(NOTE_STAGED_KEY):
            raise PermanentError(
                f"after promoting, the primary is {key_hint(new_id)}, not the pair this rotation "
                "staged: someone else changed the app's credentials meanwhile; nothing is stored"
            )
        return new_id, new_secret

    def _promotion_found(
        self, ctx: Context, app: OrgApp, consumer_id: str, slot: StagedEntry
    ) -> tuple[str, Secret]:
        """ScaiVault's pair sits in the slot as Rotated: the primary is ours only if noted."""
        new_id, new_secret = app.primary(consumer_id)
        if key_fingerprint(new_id) == ctx.notes.get(NOTE_STAGED_KEY):
            ctx.log.info(
                "salesforce_promotion_found",
                consumer_id=consumer_id,
                staged_id=slot.id,
                key_hint=key_hint(slot.key),
            )
            return new_id, new_secret
        ctx.log.warning(
            "salesforce_primary_not_ours",
            consumer_id=consumer_id,
            staged_id=slot.id,
            key_hint=key_hint(slot.key),
            primary_hint=key_hint(new_id),
        )
        raise PermanentError(_not_ours(slot, new_id))

    def _stage_or_adopt(self, ctx: Context, app: OrgApp, consumer_id: str) -> StagedEntry:
        """Clean the slot, adopt the Active pair this rotation noted, or stage (and note) one."""
        for entry in app.staged(consumer_id):
            if entry.state == "Active" and entry.secret and self._is_noted(ctx, entry):
                ctx.log.info(
                    "salesforce_staged_adopted", consumer_id=consumer_id, staged_id=entry.id
                )
                self._note(ctx, entry)
                return entry
            if entry.state == "Active":  # not ours: it was never returned, so never stored
                app.delete(consumer_id, entry.id)
                ctx.log.warning(
                    "salesforce_unknown_staged_deleted",
                    consumer_id=consumer_id,
                    staged_id=entry.id,
                    key_hint=key_hint(entry.key),
                )
                continue
            if entry.state == "Rotated" and not self._late_finalize_due(ctx, entry):
                raise PermanentError(
                    f"the staged slot holds a Rotated credential ({key_hint(entry.key)}) that is "
                    "not known to be past its grace period; finalize the previous rotation first"
                )
            app.delete(consumer_id, entry.id)
            ctx.log.info("salesforce_slot_cleared", staged_id=entry.id, state=entry.state)
        staged = app.stage(consumer_id)
        if staged is None or not staged.secret:
            staged = next((e for e in app.staged(consumer_id) if e.state == "Active"), None)
        if staged is None:
            raise TransientError("the staged credential did not appear after staging")
        ctx.log.info("salesforce_staged", consumer_id=consumer_id, staged_id=staged.id)
        self._note(ctx, staged)
        return staged

    @staticmethod
    def _is_noted(ctx: Context, entry: StagedEntry) -> bool:
        return entry.id == ctx.notes.get(NOTE_STAGED_ID)

    @staticmethod
    def _note(ctx: Context, entry: StagedEntry) -> None:
        """Remember ``entry`` as the pair this rotation promotes (id first, then the key)."""
        for name, value in (
            (NOTE_STAGED_ID, entry.id),
            (NOTE_STAGED_KEY, key_fingerprint(entry.key)),
        ):
            if ctx.notes.get(name) != value:
                ctx.notes.put(name, value)

    def _late_finalize_due(self, ctx: Context, entry: StagedEntry) -> bool:
        """Is ``entry`` the previous rotation's old pair, past its grace (``finalize_after``,
        and a whole ``grace_period`` after the current version was created)?

        Metadata anyone with write access may have set: a missing or malformed value means
        "not known to be due".
        """
        metadata = ctx.current.metadata
        previous = metadata.get("previous_version")
        due = finalize_due(metadata, ctx.current.created_at)
        if not isinstance(previous, int) or isinstance(previous, bool) or due is None:
            return False
        if ctx.clock() < due:  # the engine's clock: this machine's may run ahead
            return False
        return ctx.vault.read(ctx.path, previous).data.get("client_id") == entry.key

    def _await_propagation(
        self,
        ctx: Context,
        conn: SalesforceConnection,
        staged: StagedEntry,
        options: SalesforceOAuthOptions,
    ) -> None:
        deadline = time.monotonic() + options.propagation_timeout
        tries = 0
        while True:
            tries += 1
            try:
                conn.token(staged.key, staged.secret)
            except CredentialRefused:
                if time.monotonic() >= deadline:
                    raise TransientError(
                        "the staged credential is not accepted yet (propagation); it stays "
                        "staged and the next attempt adopts it"
                    ) from None
                time.sleep(options.propagation_interval)
                continue
            ctx.log.info("salesforce_staged_accepted", staged_id=staged.id, tries=tries)
            return


def _not_ours(slot: StagedEntry, primary: str) -> str:
    """What on-call must know when ScaiVault's pair is Rotated and the primary is not ours.

    One line (the run record keeps the first line, up to 500 characters).
    """
    old, new = key_hint(slot.key), key_hint(primary)
    until = f"until {slot.expires[:10]}" if slot.expires else "for ~30 days after its rotation"
    return (
        f"ScaiVault's client_id {old} sits in the app's staged slot as Rotated (valid {until}) "
        f"and the primary {new} is no pair of this rotation: likely the one a rollback took out "
        "of ScaiVault, still valid. Nothing changed: a fresh pair cannot be staged without "
        f"deleting {old}, which consumers use. To retire {new}: store its pair in ScaiVault, let "
        f"consumers pick it up, delete the Rotated entry {old} in Setup, rotate again, then "
        "finalize --now"
    )

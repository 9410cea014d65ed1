"""The salesforce-oauth rotator's steps against the fake Salesforce over TLS."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from rotators import MemoryNotes, PermanentError, SecretData, TransientError
from rotators.contract import RotationContext
from rotators.salesforce_oauth import (
    NOTE_STAGED_ID,
    NOTE_STAGED_KEY,
    SalesforceOAuthOptions,
    SalesforceOAuthRotator,
    key_fingerprint,
)
from rotators.testing import CapturingLog, MemoryVault, make_context
from tests.fixtures.salesforce import (
    ADMIN_PATH,
    TARGET_PATH,
    Credential,
    FakeSalesforce,
    rotator_options,
)


class Setup:
    """One target credential, an admin credential and an in-memory ScaiVault holding both.

    Contexts belong to one rotation (``rot_test``, with its notes) until :meth:`next_rotation`.
    """

    def __init__(self, fake: FakeSalesforce, **options: Any) -> None:
        self.fake = fake
        self.admin = fake.admin()
        self.target = fake.target()
        self.vault = MemoryVault()
        self.vault.put(ADMIN_PATH, self.admin.data())
        self.old = {**self.target.data(), "note": "kept"}
        self.vault.put(TARGET_PATH, self.old)
        self.options = rotator_options(fake, self.target, **options)
        self.log = CapturingLog()
        self.rotator = SalesforceOAuthRotator()
        self.rotation_id = "rot_test"
        self.notes = MemoryNotes()

    def ctx(self, **options: Any) -> RotationContext:
        return make_context(
            self.rotator,
            self.vault,
            TARGET_PATH,
            {**self.options, **options},
            rotation_id=self.rotation_id,
            log=self.log,
            notes=self.notes,
        )

    def next_rotation(self, rotation_id: str) -> None:
        """Later contexts belong to a new rotation, which starts with no notes."""
        self.rotation_id = rotation_id
        self.notes = MemoryNotes()

    def secrets(self, *more: dict[str, Any]) -> list[str]:
        values = [self.target.client_secret, self.admin.client_secret]
        return values + [str(d["client_secret"]) for d in more]

    def staged(self) -> dict[str, Any] | None:
        staged: dict[str, Any] | None = self.fake.consumer_state(self.target.consumer_id)["staged"]
        return staged


def assert_no_secret(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


def error_texts(err: pytest.ExceptionInfo[BaseException]) -> list[str]:
    exc = err.value
    return [str(exc), repr(exc), repr(exc.args), str(exc.__cause__), str(exc.__context__)]


def test_mint_verify_finalize_rotates_the_pair(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce)
    new = s.rotator.mint(s.ctx())
    assert new["note"] == "kept" and new["client_id"] != s.old["client_id"]
    assert salesforce.is_valid(new) and salesforce.is_valid(s.old)  # overlap until finalize
    assert s.staged() == {"id": s.staged()["id"], "key": s.old["client_id"], "state": "Rotated"}

    s.rotator.verify(s.ctx(), SecretData(new))
    s.rotator.finalize(s.ctx(), SecretData(s.old), SecretData(new))
    assert not salesforce.is_valid(s.old) and salesforce.is_valid(new)
    assert s.staged() is None
    s.rotator.finalize(s.ctx(), SecretData(s.old), SecretData(new))  # already done = success
    assert_no_secret([s.log.text()], s.secrets(new))


def test_mint_twice_returns_the_same_pair_and_stages_once(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce)
    assert s.rotator.mint(s.ctx()) == SalesforceOAuthRotator().mint(s.ctx())
    assert salesforce.count("POST", f"{s.target.consumer_id}/staged") == 1


def test_a_stage_whose_answer_was_lost_is_replaced_not_adopted(
    salesforce: FakeSalesforce,
) -> None:
    s = Setup(salesforce, read_timeout=0.5)
    salesforce.fault("POST */staged", "hang", seconds=1.5)
    with pytest.raises(TransientError):  # the response never came: the stage did land
        s.rotator.mint(s.ctx())
    orphan = s.staged()
    assert orphan is not None and orphan["state"] == "Active"
    assert s.notes.get(NOTE_STAGED_ID) is None  # its id never reached this rotation

    new = SalesforceOAuthRotator().mint(s.ctx())
    assert new["client_id"] == salesforce.consumer_state(s.target.consumer_id)["key"]
    assert new["client_id"] != orphan["key"] and salesforce.is_valid(s.old)
    assert salesforce.count("POST", f"{s.target.consumer_id}/staged") == 2
    assert salesforce.count("DELETE", f"/staged/{orphan['id']}") == 1  # before the new POST
    assert "salesforce_unknown_staged_deleted" in s.log.text()


def test_crash_after_promote_rereads_the_new_primary(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce, read_timeout=0.5)
    salesforce.fault("PATCH */staged/*", "hang", seconds=1.5)
    with pytest.raises(TransientError):
        s.rotator.mint(s.ctx())
    assert s.staged() is not None and s.staged()["state"] == "Rotated"

    new = SalesforceOAuthRotator().mint(s.ctx())
    assert salesforce.is_valid(new) and salesforce.is_valid(s.old)
    assert salesforce.count("POST", f"{s.target.consumer_id}/staged") == 1
    assert "salesforce_promotion_found" in s.log.text()


def test_limit_exceeded_is_transient_with_a_long_backoff(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce, limit_backoff=7200)
    salesforce.fault("GET */staged", "limit_exceeded")
    with pytest.raises(TransientError) as err:
        s.rotator.mint(s.ctx())
    assert err.value.retry_after == 7200 and "REQUEST_LIMIT_EXCEEDED" in str(err.value)
    assert s.staged() is None and salesforce.is_valid(s.old)
    assert salesforce.is_valid(s.rotator.mint(s.ctx()))


def test_api_budget_below_minimum_defers_the_mint(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce, min_api_remaining=100)
    salesforce.configure(api_max=50, api_used=0)
    with pytest.raises(TransientError) as err:
        s.rotator.mint(s.ctx())
    assert err.value.retry_after == 3600.0


def test_propagation_delay_is_waited_out(salesforce: FakeSalesforce) -> None:
    salesforce.configure(propagation_delay=1.0)
    s = Setup(salesforce)
    new = s.rotator.mint(s.ctx())
    assert salesforce.is_valid(new)
    accepted = [e for e in s.log.events if e["event"] == "salesforce_staged_accepted"]
    assert accepted[0]["tries"] > 1


def test_propagation_timeout_keeps_the_stage_for_the_next_attempt(
    salesforce: FakeSalesforce,
) -> None:
    salesforce.configure(propagation_delay=1.0)
    s = Setup(salesforce)
    with pytest.raises(TransientError):
        s.rotator.mint(s.ctx(propagation_timeout=0.0))
    assert s.staged() is not None and s.staged()["state"] == "Active"
    assert salesforce.is_valid(SalesforceOAuthRotator().mint(s.ctx()))
    assert salesforce.count("POST", f"{s.target.consumer_id}/staged") == 1
    assert "salesforce_staged_adopted" in s.log.text()


def test_expired_session_reauthenticates_once(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce)
    salesforce.fault("GET */staged", "expired_session")
    assert salesforce.is_valid(s.rotator.mint(s.ctx()))
    salesforce.fault("GET */staged", "expired_session", count=2)
    with pytest.raises(TransientError, match="expired again"):
        s.rotator.finalize(s.ctx(), SecretData(s.old), SecretData(s.old | {"client_id": "x"}))


def test_server_unavailable_on_stage_is_transient(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce)
    salesforce.fault("POST */staged", "unavailable")
    with pytest.raises(TransientError, match="503"):
        s.rotator.mint(s.ctx())
    assert salesforce.is_valid(s.rotator.mint(s.ctx()))


def test_refuses_to_rotate_its_own_admin_credential(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce)
    s.vault.put(ADMIN_PATH, s.target.data())
    with pytest.raises(PermanentError, match="authenticates with"):
        s.rotator.mint(s.ctx())
    with pytest.raises(PermanentError, match="self-rotation"):
        s.rotator.mint(s.ctx(admin_secret_path=TARGET_PATH))
    assert s.staged() is None


def test_classic_connected_app_says_to_migrate(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce)
    classic = salesforce.target("Legacy", kind="connected_app")
    s.vault.put(TARGET_PATH, classic.data())
    with pytest.raises(PermanentError, match="Migrate to External Client App"):
        s.rotator.mint(s.ctx(app_id=classic.app_id))


def test_missing_permission_and_setting_are_permanent_and_named(
    salesforce: FakeSalesforce,
) -> None:
    s = Setup(salesforce)
    plain: Credential = salesforce.target("NoPerms")
    s.vault.put(ADMIN_PATH, plain.data())
    with pytest.raises(PermanentError, match="View Client Secret") as err:
        s.rotator.mint(s.ctx())
    assert_no_secret(error_texts(err), [*s.secrets(), plain.client_secret])

    s.vault.put(ADMIN_PATH, s.admin.data())
    salesforce.configure(rest_secret_access=False)
    with pytest.raises(PermanentError, match="consumer secrets via REST API") as err:
        s.rotator.mint(s.ctx())
    assert_no_secret(error_texts(err), s.secrets())


def test_wrong_consumer_id_is_permanent(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce)
    with pytest.raises(PermanentError, match="consumer_id"):
        s.rotator.mint(s.ctx(consumer_id="0CsNOPE"))


def test_verify_rejects_a_wrong_pair(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce)
    wrong = SecretData({"client_id": s.target.client_id, "client_secret": "not-the-secret"})
    with pytest.raises(PermanentError, match="did not stage") as err:
        s.rotator.verify(s.ctx(), wrong)
    assert_no_secret(error_texts(err), [*s.secrets(), "not-the-secret"])


def test_verify_waits_only_for_the_pair_this_rotation_staged(salesforce: FakeSalesforce) -> None:
    """invalid_client for the pair noted at mint is propagation: the engine retries it."""
    s = Setup(salesforce)
    refused = SecretData({"client_id": s.target.client_id, "client_secret": "not-the-secret"})
    s.notes.put(NOTE_STAGED_KEY, key_fingerprint(s.target.client_id))
    with pytest.raises(TransientError, match="does not accept the new credential yet"):
        s.rotator.verify(s.ctx(), refused)


def test_finalize_never_revokes_the_primary_or_an_active_entry(
    salesforce: FakeSalesforce,
) -> None:
    s = Setup(salesforce)
    bogus_new = SecretData({"client_id": "3MVG9unknown", "client_secret": "x" * 20})
    with pytest.raises(PermanentError):
        s.rotator.finalize(s.ctx(consumer_id=s.target.consumer_id), SecretData(s.old), bogus_new)
    assert salesforce.is_valid(s.old)

    new = s.rotator.mint(s.ctx())
    s.rotator.finalize(s.ctx(), SecretData(s.old), SecretData(new))
    new_data = SecretData(new)
    with pytest.raises(PermanentError, match="cannot un-rotate"):  # promoted: never "revoked"
        s.rotator.discard(s.ctx(), new_data)
    assert salesforce.is_valid(new)


def test_discard_deletes_a_pair_that_is_only_staged(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce, read_timeout=0.5)
    salesforce.fault("PATCH */staged/*", "unavailable")
    with pytest.raises(TransientError):
        s.rotator.mint(s.ctx())
    staged = s.staged()
    assert staged is not None and staged["state"] == "Active"
    s.rotator.discard(s.ctx(), SecretData({"client_id": staged["key"], "client_secret": "?" * 8}))
    assert s.staged() is None and salesforce.is_valid(s.old)


def test_logs_through_the_real_pipeline_hold_no_secret(
    salesforce: FakeSalesforce, log_stream: io.StringIO
) -> None:
    from orchestrator.log import get_logger

    s = Setup(salesforce)
    ctx = make_context(s.rotator, s.vault, TARGET_PATH, s.options, log=get_logger("test"))
    new = s.rotator.mint(ctx)
    s.rotator.verify(ctx, SecretData(new))
    s.rotator.finalize(ctx, SecretData(s.old), SecretData(new))
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    assert {"salesforce_minted", "salesforce_verified", "salesforce_finalized"} <= {
        line["event"] for line in lines
    }
    assert_no_secret([log_stream.getvalue()], s.secrets(new))


@pytest.mark.parametrize(
    ("field", "value"),
    [("my_domain_url", "http://acme.my.salesforce.com"), ("api_version", "59.0"), ("bogus", 1)],
)
def test_options_are_validated(field: str, value: Any) -> None:
    good = {
        "my_domain_url": "https://a.my.salesforce.com",
        "app_id": "0xI1",
        "admin_secret_path": "a",
    }
    SalesforceOAuthOptions.model_validate(good)
    with pytest.raises(ValidationError):
        SalesforceOAuthOptions.model_validate({**good, field: value})


@pytest.mark.parametrize(
    ("finalize_after", "late_finalize"),
    [
        ("2020-01-01T00:00:00Z", True),
        ("2020-01-01T00:00:00", True),  # no zone: UTC, as the engine reads it
        ("2999-01-01T00:00:00Z", False),
        # Metadata anyone with write access may set: garbage is "not known to be due".
        ("not a time", False),
        ("2020-13-45T99:00:00Z", False),
        ("", False),
        (20200101, False),
        (None, False),
    ],
)
def test_next_rotation_clears_an_unfinalized_previous_pair_only_after_its_grace(
    salesforce: FakeSalesforce, finalize_after: Any, late_finalize: bool
) -> None:
    s = Setup(salesforce)
    first = s.rotator.mint(s.ctx())
    metadata = {"previous_version": 1, "finalize_after": finalize_after, "grace_period": "0s"}
    s.vault.put(TARGET_PATH, first, metadata)
    s.next_rotation("rot_second")
    if not late_finalize:
        with pytest.raises(PermanentError, match="finalize the previous rotation first"):
            s.rotator.mint(s.ctx())
        assert salesforce.is_valid(s.old)
        return
    second = s.rotator.mint(s.ctx())
    assert not salesforce.is_valid(s.old)
    assert salesforce.is_valid(first) and salesforce.is_valid(second)
    assert s.staged() is not None and s.staged()["key"] == first["client_id"]


@pytest.mark.parametrize(
    "grace",
    [{"grace_period": "1h"}, {}, {"grace_period": "soon"}, {"grace_period": 3600}],
)
def test_late_finalize_waits_a_whole_grace_after_the_version_was_created(
    salesforce: FakeSalesforce, grace: dict[str, Any]
) -> None:
    """``finalize_after`` is set before the store's retries and may be forged: a version
    created just now keeps the previous old pair for its whole grace period (or, with no
    readable grace period, until the previous rotation's own finalize)."""
    s = Setup(salesforce)
    first = s.rotator.mint(s.ctx())
    metadata = {"previous_version": 1, "finalize_after": "2020-01-01T00:00:00Z", **grace}
    s.vault.put(TARGET_PATH, first, metadata)
    s.next_rotation("rot_second")
    with pytest.raises(PermanentError, match="finalize the previous rotation first"):
        s.rotator.mint(s.ctx())
    assert salesforce.is_valid(s.old)


def test_a_rotation_after_a_rollback_never_stores_the_rolled_back_pair(
    salesforce: FakeSalesforce,
) -> None:
    s = Setup(salesforce)
    leaked = s.rotator.mint(s.ctx())  # rotation 1 promotes it; version 2 holds it
    s.vault.put(TARGET_PATH, leaked, {"rotation_id": "rot_test", "previous_version": 1})
    with pytest.raises(PermanentError, match="cannot un-rotate"):  # what rollback meets
        s.rotator.discard(s.ctx(), SecretData(leaked))
    s.vault.put(TARGET_PATH, s.old, {"rolled_back_rotation_id": "rot_test"})  # version 3

    s.next_rotation("rot_after_rollback")
    with pytest.raises(PermanentError) as err:
        s.rotator.mint(s.ctx())
    message = str(err.value)
    assert "no pair of this rotation" in message and "rollback" in message
    assert key_hint_of(s.old) in message and key_hint_of(leaked) in message
    assert "Rotated" in message and "finalize --now" in message
    assert len("PermanentError: " + message) <= 500 and "\n" not in message  # whole in a record
    assert_no_secret(error_texts(err), s.secrets(leaked))
    # Nothing changed: the restored pair is still the Rotated entry, the leaked one primary.
    consumer = salesforce.consumer_state(s.target.consumer_id)
    assert consumer["key"] == leaked["client_id"] and s.staged()["state"] == "Rotated"
    assert s.staged()["key"] == s.old["client_id"] and salesforce.is_valid(s.old)
    assert salesforce.count("POST", f"{s.target.consumer_id}/staged") == 1
    assert s.notes.as_dict() == {}
    assert "salesforce_primary_not_ours" in s.log.text()


def test_an_active_pair_another_rotation_staged_is_deleted_not_adopted(
    salesforce: FakeSalesforce,
) -> None:
    salesforce.configure(propagation_delay=1.0)
    s = Setup(salesforce)
    with pytest.raises(TransientError):  # rotation 1 stages a pair, then gives up waiting
        s.rotator.mint(s.ctx(propagation_timeout=0.0))
    abandoned = s.staged()
    assert abandoned is not None and abandoned["state"] == "Active"
    assert s.notes.get(NOTE_STAGED_ID) == abandoned["id"]

    s.next_rotation("rot_other")
    new = s.rotator.mint(s.ctx())
    assert new["client_id"] != abandoned["key"]
    assert salesforce.count("POST", f"{s.target.consumer_id}/staged") == 2
    assert "salesforce_unknown_staged_deleted" in s.log.text()
    assert s.notes.get(NOTE_STAGED_KEY) == key_fingerprint(str(new["client_id"]))
    assert salesforce.is_valid(new) and salesforce.is_valid(s.old)


def test_notes_name_the_promoted_pair_and_hold_no_secret(salesforce: FakeSalesforce) -> None:
    s = Setup(salesforce)
    new = s.rotator.mint(s.ctx())
    notes = s.notes.as_dict()
    assert notes[NOTE_STAGED_KEY] == key_fingerprint(str(new["client_id"]))
    assert set(notes) == {NOTE_STAGED_ID, NOTE_STAGED_KEY}
    assert_no_secret(list(notes.values()), [*s.secrets(new), str(new["client_id"])])


def key_hint_of(data: dict[str, Any]) -> str:
    return "..." + str(data["client_id"])[-4:]


def test_late_finalize_goes_by_the_engines_clock_not_the_machines(
    salesforce: FakeSalesforce,
) -> None:
    """A worker whose own clock runs an hour ahead must not delete the previous rotation's old
    pair before its grace is over on the engine's (Redis's) clock."""
    s = Setup(salesforce)
    first = s.rotator.mint(s.ctx())
    due = datetime.now(UTC) - timedelta(minutes=30)  # past by this machine's clock
    metadata = {"previous_version": 1, "finalize_after": due.isoformat(), "grace_period": "0s"}
    s.vault.put(TARGET_PATH, first, metadata)
    s.next_rotation("rot_second")
    behind = dataclasses.replace(s.ctx(), clock=lambda: due - timedelta(minutes=30))
    with pytest.raises(PermanentError, match="finalize the previous rotation first"):
        s.rotator.mint(behind)
    assert salesforce.is_valid(s.old), "the previous old pair is still within its grace"

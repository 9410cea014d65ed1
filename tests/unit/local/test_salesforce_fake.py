"""The fake Salesforce speaks Salesforce's wire format over TLS, checked with simple-salesforce."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from orchestrator.local.fake_salesforce.server import make_server
from tests.fixtures.salesforce import Credential, FakeSalesforce


def connect(fake: FakeSalesforce, cred: Credential) -> Salesforce:
    session = requests.Session()
    session.verify = str(fake.ca_bundle)
    session.trust_env = False
    token = session.post(
        fake.url + "/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(cred.client_id, cred.client_secret),
    ).json()
    return Salesforce(
        instance_url=token["instance_url"],
        session_id=token["access_token"],
        session=session,
        version="65.0",
    )


def staged_path(cred: Credential) -> str:
    return f"apps/oauth/credentials/{cred.app_id}/{cred.consumer_id}/staged"


def test_stage_rotate_delete_cycle_changes_which_pairs_work(salesforce: FakeSalesforce) -> None:
    sf, target = connect(salesforce, salesforce.admin()), salesforce.target()
    staged = sf.restful(staged_path(target), method="POST", json={})["stagedCredentials"][0]
    new = {"client_id": staged["key"], "client_secret": staged["secret"]}
    assert staged["state"] == "Active"
    assert salesforce.is_valid(target.data()) and salesforce.is_valid(new)

    sf.restful(f"{staged_path(target)}/{staged['id']}", method="PATCH", json={"command": "rotate"})
    primary = sf.restful(
        staged_path(target).removesuffix("/staged"), params={"part": "keyandsecret"}
    )
    assert (primary["key"], primary["secret"]) == (new["client_id"], new["client_secret"])
    (rotated,) = sf.restful(staged_path(target))["stagedCredentials"]
    assert (rotated["state"], rotated["key"]) == ("Rotated", target.client_id)
    assert salesforce.is_valid(target.data())

    assert sf.restful(f"{staged_path(target)}/{rotated['id']}", method="DELETE") is None
    assert not salesforce.is_valid(target.data()) and salesforce.is_valid(new)
    with pytest.raises(SalesforceResourceNotFound):
        sf.restful(f"{staged_path(target)}/{rotated['id']}", method="DELETE")
    assert sf.api_usage["api-usage"].used > 0


def test_only_one_staged_slot(salesforce: FakeSalesforce) -> None:
    sf, target = connect(salesforce, salesforce.admin()), salesforce.target()
    sf.restful(staged_path(target), method="POST", json={})
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.restful(staged_path(target), method="POST", json={})
    assert err.value.content[0]["errorCode"] == "INVALID_INPUT"


def test_propagation_delay_holds_back_new_pairs(salesforce: FakeSalesforce) -> None:
    # An hour's delay on the fake's clock: no real wait, and no race with a slow machine.
    salesforce.configure(propagation_delay=3600.0)
    sf, target = connect(salesforce, salesforce.admin()), salesforce.target()
    staged = sf.restful(staged_path(target), method="POST", json={})["stagedCredentials"][0]
    new = {"client_id": staged["key"], "client_secret": staged["secret"]}
    assert not salesforce.is_valid(new)
    salesforce.advance_clock(3500)
    assert not salesforce.is_valid(new)
    salesforce.advance_clock(101)
    assert salesforce.is_valid(new)


def test_faults_and_errors_are_shaped_like_salesforce(salesforce: FakeSalesforce) -> None:
    sf, target = connect(salesforce, salesforce.admin()), salesforce.target()
    salesforce.fault("GET */limits*", "limit_exceeded")
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.limits()
    assert refused.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    salesforce.fault("POST */staged", "unavailable")
    with pytest.raises(SalesforceGeneralError) as unavailable:
        sf.restful(staged_path(target), method="POST", json={})
    assert unavailable.value.status == 503
    assert sf.restful(staged_path(target))["stagedCredentials"] == []
    salesforce.expire_sessions()
    with pytest.raises(SalesforceExpiredSession):
        sf.limits()

    sf = connect(salesforce, salesforce.admin())
    salesforce.configure(rest_secret_access=False)
    with pytest.raises(SalesforceRefusedRequest) as off:
        sf.restful(staged_path(target))
    assert "not currently enabled" in off.value.content[0]["message"]

    bad = salesforce.http.post("/services/oauth2/token", data={"grant_type": "password"})
    assert bad.json() == {
        "error": "unsupported_grant_type",
        "error_description": "grant type not supported",
    }


def test_caller_without_permissions_and_classic_apps_are_refused(
    salesforce: FakeSalesforce,
) -> None:
    target, classic = salesforce.target(), salesforce.target("LegacyApp", kind="connected_app")
    with pytest.raises(SalesforceRefusedRequest) as err:
        connect(salesforce, target).restful(staged_path(target))
    assert err.value.content[0]["errorCode"] == "INSUFFICIENT_ACCESS"
    sf = connect(salesforce, salesforce.admin())
    assert classic.app_id not in {a["identifier"] for a in sf.restful("apps/oauth/usage")["apps"]}
    with pytest.raises(SalesforceResourceNotFound):
        sf.restful(f"apps/oauth/credentials/{classic.app_id}")
    assert salesforce.is_valid(classic.data())


def test_state_file_survives_a_restart(tmp_path: Path) -> None:
    server, _ = make_server(state_file=tmp_path / "state.json")
    app = server.org.create_app("Persisted")
    consumer = server.org.create_consumer(app.id, "c")
    server.server_close()
    again, _ = make_server(state_file=tmp_path / "state.json")
    assert again.org.apps[app.id].consumers[consumer.id].primary == consumer.primary
    again.server_close()


def test_revoke_ends_a_session(salesforce: FakeSalesforce) -> None:
    sf = connect(salesforce, salesforce.admin())
    sf.limits()
    revoked = salesforce.http.post("/services/oauth2/revoke", data={"token": sf.session_id})
    assert revoked.status_code == 200
    with pytest.raises(SalesforceExpiredSession):
        sf.limits()
    again = salesforce.http.post("/services/oauth2/revoke", data={"token": sf.session_id})
    assert (again.status_code, again.json()["error"]) == (400, "invalid_token")

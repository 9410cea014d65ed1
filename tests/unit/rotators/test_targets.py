"""Built-in rotators name the system a rule points at as its target (never a credential), so
rules on one server or org share its concurrency budget."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.routing import RoutingTable
from rotators.contract import Rotator, host_target
from rotators.mysql.dual import MysqlDualRotator
from rotators.mysql.password import MysqlPasswordRotator
from rotators.postgres.dual import PostgresDualRotator
from rotators.postgres.password import PostgresPasswordRotator
from rotators.random_password import RandomPasswordRotator
from rotators.redis_acl import RedisAclRotator
from rotators.salesforce_oauth import SalesforceOAuthRotator

DB = {"host": "orders-db.internal", "port": 6000, "admin_secret_path": "db/admin"}


@pytest.mark.parametrize(
    ("rotator", "options"),
    [
        (PostgresPasswordRotator(), {"host": "orders-db.internal", "port": 6000}),
        (PostgresDualRotator(), {**DB, "users": ["app_a", "app_b"]}),
        (MysqlPasswordRotator(), {**DB, "username": "app"}),
        (MysqlDualRotator(), {**DB, "users": ["app_a", "app_b"]}),
        (RedisAclRotator(), {**DB, "username": "app"}),
    ],
)
def test_database_rotators_name_host_and_port(
    rotator: Rotator[Any], options: dict[str, Any]
) -> None:
    assert rotator.target(rotator.Options.model_validate(options)) == "orders-db.internal:6000"


def test_salesforce_names_the_org_by_its_host() -> None:
    rotator = SalesforceOAuthRotator()
    options = rotator.Options.model_validate(
        {
            "my_domain_url": "https://acme.my.salesforce.com/",
            "app_id": "0xI000000000001",
            "admin_secret_path": "sf/admin",
        }
    )
    assert rotator.target(options) == "acme.my.salesforce.com"


def test_an_ipv6_server_is_bracketed() -> None:
    assert host_target("::1", 5432) == "[::1]:5432"


def test_rules_on_one_server_share_its_budget_and_a_vault_only_rule_is_its_own() -> None:
    routing = RoutingTable.parse(
        """
[[rules]]
match = "orders/**"
rotator = "postgres-password"
max_concurrent = 4
options = { host = "orders-db.internal" }

[[rules]]
match = "pw/**"
rotator = "random-password"
""",
        rotators={
            "postgres-password": PostgresPasswordRotator(),
            "random-password": RandomPasswordRotator(),
        },
    )
    orders = routing.match("orders/app")
    pw = routing.match("pw/x")
    assert orders is not None and pw is not None
    assert orders.target.target == "orders-db.internal:5432" and orders.target.limit == 4
    assert pw.target.target == "rule:pw/**" and pw.target.limit is None

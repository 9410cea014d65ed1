"""The routing file: which rotator, with which options and grace period, rotates which path.

TOML at ``ROTATOR_CONFIG`` (docs/operating.md#routing-file)::

    [[rules]]
    match = "integrations/salesforce/*"   # * = one path segment, ** = any number of segments
    rotator = "salesforce-oauth"
    grace_period = "48h"                  # optional: used when the event carries none
    [rules.options]                       # validated against the rotator's Options schema
    my_domain_url = "https://acme.my.salesforce.com"

A rule whose rotator can tell who still uses a credential (``Rotator.in_use``) also says how
finalize waits for the old credential's consumers: ``wait_until_unused`` (default on for such
rotators), ``finalize_wait_max`` (default ``24h``), ``when_still_used`` after that
(``needs_attention``, the default, or ``finalize``) and ``finalize_recheck`` (the first
re-check interval, default ``1m``, doubling up to 15 minutes).

Every rule rotates against a *target* with a concurrency budget: ``target`` names it (rules
naming the same target share one budget; default: what the rotator calls the system its
options point at, :meth:`Rotator.target`, else the rule itself) and ``max_concurrent`` is the
budget (default: :attr:`Rotator.max_concurrent`; none means unlimited).

The first matching rule wins. Loading validates every rule and raises one
:class:`~orchestrator.errors.ConfigError` whose ``problems`` list *every* problem, each line
naming the file, the rule number, the field and what to do. Rotator choice and options come
only from this file, never from an event or secret metadata (docs/architecture.md, invariant I6).

The package: :mod:`~orchestrator.routing.matching` (globs), :mod:`~orchestrator.routing.rule`
(one rule's fields), :mod:`~orchestrator.routing.validate` (problems of a document) and
:mod:`~orchestrator.routing.table` (the table, its origin and lookup).
"""

from __future__ import annotations

from orchestrator.routing.matching import check_glob, literal_prefix
from orchestrator.routing.rule import (
    MAX_CONCURRENT_LIMIT,
    RECHECK_CAP,
    RULE_KEYS,
    WHEN_STILL_USED,
    Budget,
    Rule,
    UnusedWait,
    rule_target,
)
from orchestrator.routing.table import NO_RULE, RoutingOrigin, RoutingTable, unrouted_reason

__all__ = [
    "MAX_CONCURRENT_LIMIT",
    "NO_RULE",
    "RECHECK_CAP",
    "RULE_KEYS",
    "WHEN_STILL_USED",
    "Budget",
    "RoutingOrigin",
    "RoutingTable",
    "Rule",
    "UnusedWait",
    "check_glob",
    "literal_prefix",
    "rule_target",
    "unrouted_reason",
]

"""The operator's guide and the settings table say what the code does; deploy/ holds no secret."""

from __future__ import annotations

import re
import secrets
import shlex

import pytest
from cryptography.fernet import Fernet

from orchestrator.errors import ConfigError
from orchestrator.settings import Settings, env_names
from tests.fixtures.deploy import (
    DEPLOY,
    K8S_TARGETS,
    REPO,
    THIRD_PARTY_ENV,
    check_cli_argv,
    cli_envvars,
    committed_deploy_files,
    configmap_data,
    dockerfile_instructions,
    env_file,
    k8s_resources,
    kubectl,
    load_yaml,
    load_yaml_all,
    option_value,
    secret_findings,
    systemd_unit,
    unit_environment,
    unit_values,
)
from tests.fixtures.monitoring import exported_metric_names

OPERATING = (REPO / "docs" / "operating.md").read_text(encoding="utf-8")
GUIDE = (DEPLOY / "README.md").read_text(encoding="utf-8")
ENV_LIKE = re.compile(r"\b(?:SCAIVAULT|ROTATOR|REDIS|EMULATOR|REMAP)_[A-Z0-9_]+\b")


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


def _documented_settings() -> list[str]:
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", _section(OPERATING, "Configuration"), re.M)
    assert rows, "the Configuration table has no rows"
    return rows


def test_configuration_table_lists_exactly_the_settings_the_code_reads() -> None:
    documented = _documented_settings()
    assert len(documented) == len(set(documented)), "a setting is listed twice"
    assert set(documented) == set(env_names()), (
        f"undocumented: {sorted(set(env_names()) - set(documented))}; "
        f"documented but not read: {sorted(set(documented) - set(env_names()))}"
    )


def test_guide_points_at_the_one_settings_table() -> None:
    assert "../docs/operating.md#configuration" in _section(GUIDE, "Settings")
    assert "deploy/README.md" in _section(OPERATING, "Deploying")


def test_every_variable_the_guide_names_is_real() -> None:
    known = set(env_names()) | cli_envvars() | set(THIRD_PARTY_ENV)
    named = set(ENV_LIKE.findall(GUIDE))
    assert named - known == set(), f"the guide names variables nothing reads: {named - known}"


def test_every_metric_the_guide_names_is_exported() -> None:
    exported = exported_metric_names()
    suffixes = ("_total", "_bucket", "_sum", "_count")
    for name in set(re.findall(r"\bscaivault_(?:receiver|rotator)_[a-z_]+", GUIDE)):
        base = next((name.removesuffix(s) for s in suffixes if name.endswith(s)), name)
        assert name in exported or base in exported, f"{name} is not an exported metric"


def test_every_cli_line_in_the_guide_parses() -> None:
    lines = re.findall(r"`(scaivault-rotator [^`\[]+)`", GUIDE)
    lines += re.findall(r"^(scaivault-rotator [^\n#]+)", GUIDE, re.M)
    assert len(lines) >= 3
    for line in lines:
        argv = shlex.split(line)[1:]
        assert check_cli_argv(argv, {"EMULATOR_ADMIN_TOKEN": "x"}) is None, line


@pytest.mark.parametrize(
    "topic",
    [
        "8080",
        "9464",
        "8200",
        "6379",
        "needs_attention",
        "failed",
        "overdue",
        "401",
        "503",
        "appendfsync everysec",
        "noeviction",
        "rediss://",
        "ACL",
        "Sentinel",
        "Redis Cluster is not supported",
        "## Backup and restore",
        "## Upgrading",
        "## Scaling",
        "rate_limited",
    ],
)
def test_guide_covers(topic: str) -> None:
    assert topic in GUIDE


def test_receiver_runs_one_process_per_container_or_unit() -> None:
    compose = load_yaml(DEPLOY / "compose.yaml")["services"]["receiver"]["command"]
    unit = systemd_unit(DEPLOY / "systemd" / "scaivault-rotator-receiver.service")
    systemd = shlex.split(unit_values(unit, "Service", "ExecStart")[0])
    docs = load_yaml_all((DEPLOY / "k8s" / "base" / "receiver.yaml").read_text(encoding="utf-8"))
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    k8s = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    for argv in (compose, systemd, k8s):
        assert option_value(argv, "--workers") in (None, "1"), argv


def test_no_secret_value_is_committed_under_deploy() -> None:
    files = committed_deploy_files()
    assert any(f.name == "env.example" for f in files)
    assert not any(f.name == ".env" for f in files), "deploy/.env must never be committed"
    findings = [
        finding
        for path in files
        for finding in secret_findings(str(path.relative_to(REPO)), path.read_text("utf-8"))
    ]
    assert findings == []


@pytest.mark.parametrize(
    "line",
    [
        f"ROTATOR_SEAL_KEY={Fernet.generate_key().decode()}",
        f"SCAIVAULT_WEBHOOK_SECRET=whsec_{secrets.token_urlsafe(24)}",
        "SCAIVAULT_TOKEN=sv_live_not_a_placeholder",
        "Environment=SCAIVAULT_TOKEN=abc123",
        "REDIS_URL=rediss://rotator:hunter2-pw@redis.internal:6380/0",
        f"    token: {secrets.token_urlsafe(32)}",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        f'curl -H "Authorization: Bearer {secrets.token_hex(20)}"',
    ],
)
def test_secret_scan_catches_real_looking_values(line: str) -> None:
    assert list(secret_findings("sample", line)), line


@pytest.mark.parametrize(
    "line",
    [
        "SCAIVAULT_TOKEN=change-me",
        "SCAIVAULT_TOKEN_FILE=/var/run/secrets/scaivault-rotator/scaivault-token",
        "REDIS_URL=rediss://scaivault-rotator-worker:<password>@redis.internal:6380/0",
        "secretName: scaivault-rotator-tls",
        '-H "Authorization: Bearer $EMULATOR_ADMIN_TOKEN"',
    ],
)
def test_secret_scan_accepts_placeholders_and_references(line: str) -> None:
    assert list(secret_findings("sample", line)) == [], line


def _loads(values: dict[str, str]) -> None:
    """Settings.load() accepts ``values`` (placeholders swapped for well-formed fakes)."""
    fakes = {"ROTATOR_SEAL_KEY": Fernet.generate_key().decode()}
    settings = {k: fakes.get(k, v) for k, v in values.items() if k in set(env_names())}
    Settings.load(**settings)


def test_env_example_values_are_valid_settings() -> None:
    _loads(env_file(DEPLOY / "env.example"))


def test_kubernetes_settings_configmaps_are_valid_settings() -> None:
    for target in K8S_TARGETS:
        if target != "base" and kubectl() is None:
            continue
        _loads(configmap_data(k8s_resources(target), "scaivault-rotator-settings"))


def test_settings_loader_rejects_a_bad_value() -> None:
    with pytest.raises(ConfigError):
        _loads({"ROTATOR_LOG_LEVEL": "LOUD", "REDIS_URL": "http://redis:6379"})


def test_routing_file_path_is_the_same_everywhere() -> None:
    env = " ".join(i.text for i in dockerfile_instructions() if i.keyword == "ENV")
    (image_path,) = re.findall(r"ROTATOR_CONFIG=(\S+)", env)
    compose = load_yaml(DEPLOY / "compose.yaml")["services"]["worker"]["volumes"]
    assert any(m.split(":")[1] == image_path for m in compose), compose
    for target in K8S_TARGETS:
        if target == "base" or kubectl() is not None:
            data = configmap_data(k8s_resources(target), "scaivault-rotator-settings")
            assert data["ROTATOR_CONFIG"] == image_path
    for role in ("receiver", "worker", "beat"):
        unit = systemd_unit(DEPLOY / "systemd" / f"scaivault-rotator-{role}.service")
        assert unit_environment(unit)["ROTATOR_CONFIG"] == image_path

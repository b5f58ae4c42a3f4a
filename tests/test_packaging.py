"""The set-up files agree with each other.

- pyproject.toml and environment.yml list the same dependencies with the same
  version ranges (conda calls torch "pytorch");
- the README's quick start has exactly two commands, both scripts that exist;
- .ci/run runs the README's test command, so CI tests what a user runs;
- the console script points at a function that exists.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

# conda-forge name -> PyPI name, where they differ
CONDA_TO_PYPI = {"pytorch": "torch"}
# conda-only entries that are not dependencies of the package
CONDA_TOOLING = {"python", "pip"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _spec_set(spec: str) -> frozenset:
    return frozenset(s.replace(" ", "") for s in spec.split(",") if s.strip())


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def pyproject_deps() -> dict:
    deps = {}
    for line in pyproject()["project"]["dependencies"]:
        req = Requirement(line)
        assert req.marker is None, f"platform-specific dependency {line!r}: mirror it by hand"
        deps[_norm(req.name)] = _spec_set(str(req.specifier))
    return deps


def environment_yml(path: Path = ROOT / "environment.yml") -> tuple[dict, list]:
    """(conda dependencies, pip lines) from environment.yml.

    A deliberately small parser for the file's simple shape (PyYAML is not a
    dependency): a top-level ``dependencies:`` list of ``- name[spec]`` items
    and one ``- pip:`` item holding a list of strings.
    """
    conda, pip_lines = {}, []
    in_deps = in_pip = False
    dep_indent = None
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        text = line.strip()
        if indent == 0:
            in_deps = text == "dependencies:"
            in_pip = False
            continue
        if not in_deps or not text.startswith("- "):
            continue
        item = text[2:].strip().strip("'\"")
        if dep_indent is None:
            dep_indent = indent
        if indent == dep_indent:
            in_pip = item == "pip:"
            if in_pip:
                continue
            m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", item)
            assert m, f"cannot read conda dependency {item!r}"
            name = _norm(m.group(1))
            conda[CONDA_TO_PYPI.get(name, name)] = _spec_set(m.group(2))
        elif in_pip:
            pip_lines.append(item)
    return conda, pip_lines


def test_environment_yml_matches_pyproject():
    conda, _ = environment_yml()
    for name in CONDA_TOOLING:
        conda.pop(name, None)
    deps = pyproject_deps()
    assert deps, "no dependencies read from pyproject.toml"
    only_py = sorted(set(deps) - set(conda))
    only_conda = sorted(set(conda) - set(deps))
    assert not only_py and not only_conda, (
        f"dependencies drifted: only in pyproject.toml {only_py}, only in environment.yml {only_conda}")
    differ = {n: (sorted(deps[n]), sorted(conda[n])) for n in deps if deps[n] != conda[n]}
    assert not differ, f"version ranges differ (pyproject, environment.yml): {differ}"


def test_environment_yml_installs_the_package():
    conda, pip_lines = environment_yml()
    assert "python" in conda and "pip" in conda
    assert any(re.match(r"^-e\s+\.(\[[^\]]*\])?$", line) for line in pip_lines), pip_lines


def test_environment_parser_sees_a_drift(tmp_path):
    """The parser is not vacuous: a dependency added to one side only is caught."""
    text = (ROOT / "environment.yml").read_text()
    changed = text.replace("  - tqdm\n", "  - tqdm\n  - scipy>=1.10\n")
    assert changed != text
    (tmp_path / "environment.yml").write_text(changed)
    conda, _ = environment_yml(tmp_path / "environment.yml")
    assert conda["scipy"] == frozenset({">=1.10"})
    assert conda["torch"] == frozenset({">=2.2"})


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"^#+\s*Quick start\s*$(.*?)^```[a-z]*\n(.*?)^```", readme, re.M | re.S | re.I)
    assert m, "README.md has no 'Quick start' section with a code block"
    return [ln.strip() for ln in m.group(2).splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def test_quick_start_has_two_commands_that_exist():
    cmds = quick_start_commands()
    assert len(cmds) == 2, cmds
    for cmd in cmds:
        prog = cmd.split()[0]
        if prog.startswith("./"):
            path = ROOT / prog
            assert path.is_file(), f"{prog} (README quick start) does not exist"
            assert os.access(path, os.X_OK), f"{prog} is not executable (git update-index --chmod=+x)"


def test_ci_runs_the_readme_test_command():
    tests = [c for c in quick_start_commands() if "test" in c]
    assert len(tests) == 1, f"which quick-start command runs the tests? {quick_start_commands()}"
    want = tests[0]
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    lines = [ln[len("exec "):].strip() if ln.startswith("exec ") else ln
             for ln in lines if ln and not ln.startswith("#")]
    assert want in lines, f".ci/run does not run the README test command {want!r}: {lines}"


def test_dashboard_binds_loopback_by_default():
    text = (ROOT / "scripts" / "dashboard").read_text()
    assert re.search(r"--address\s+127\.0\.0\.1", text)
    assert "0.0.0.0" not in "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))


def test_the_notebooks_script_sets_up_jupyterlab_on_loopback_with_the_projects_kernel():
    """``./scripts/notebooks`` installs the notebook extra into .venv (nothing where the
    test set-up already has it) and runs .venv's JupyterLab on 127.0.0.1."""
    path = ROOT / "scripts" / "notebooks"
    assert os.access(path, os.X_OK)
    text = path.read_text()
    assert "bnlstm_setup notebook" in text and "--ServerApp.ip=127.0.0.1" in text
    assert "0.0.0.0" not in text and "BNLSTM_QUICK" in text
    r = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PORT": "8899"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.match(r"\d+\.\d+", r.stdout.strip()), r.stdout       # JupyterLab's version
    assert "http://localhost:8899/lab" in r.stderr


def test_console_script_target_exists():
    target = pyproject()["project"]["scripts"]["bnlstm"]
    module, func = target.split(":")
    path = ROOT / Path(*module.split(".")).with_suffix(".py")
    if not path.exists():
        pytest.fail(f"console script {target}: {path.relative_to(ROOT)} does not exist")
    tree = ast.parse(path.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in tree.body), \
        f"console script {target}: no function {func}() in {path.relative_to(ROOT)}"


def test_every_subpackage_is_packaged():
    """A wheel holds only the packages pyproject lists: every folder of bnlstm/ and app/ with an
    __init__.py must be there (bnlstm.tasks and bnlstm.paper were once missed)."""
    import tomllib
    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "bnlstm").rglob("__init__.py")}
    found |= {".".join(("bnlstm_app",) + p.parent.relative_to(root / "app").parts)
              for p in (root / "app").rglob("__init__.py")}          # app/ is bnlstm_app
    assert found <= listed, sorted(found - listed)

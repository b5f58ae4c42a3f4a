"""The layout's rules, checked on the source (docs/DESIGN.md, "Layers"):

- the model layer (``bnlstm/nn/``) imports only the standard library, torch and numpy;
- the runs (``bnlstm/runs/``) never import the model nor a task's internals (the task
  registry, ``bnlstm.tasks``, is their only way to a task);
- the app (``app/``) never imports the model, the fast path or torch;
- no import cycle among the modules' top-level imports;
- the web process that serves a page imports no torch (a subprocess imports every app
  module and reads the task registry, as a page's build does);
- no module of ``bnlstm/`` or ``app/`` over 600 lines, but the few still to split, each
  held at the size it has now.
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STDLIB = set(sys.stdlib_module_names)


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "app":
        parts[0] = "bnlstm_app"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool = False):
    """Absolute names of every module ``path`` imports (``from x import y`` gives x.y too)."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield target
            for a in node.names:
                yield f"{target}.{a.name}"


def _files(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


def _violations(folder: str, allowed) -> list:
    bad = []
    for f in _files(folder):
        for name in _imports(f):
            if not allowed(name):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    return bad


def test_the_model_layer_imports_only_torch_and_numpy():
    def allowed(name):
        top = name.split(".")[0]
        return top in STDLIB or top in ("torch", "numpy") or name.startswith("bnlstm.nn") \
            or name.startswith("bnlstm._lazy") or name == "__future__" or name.startswith("__future__.")
    assert _violations("bnlstm/nn", allowed) == []


def test_runs_reach_tasks_only_through_the_registry():
    def allowed(name):
        if name.startswith("bnlstm.nn"):
            return False
        if name.startswith("bnlstm.tasks."):       # bnlstm.tasks.<anything>: a task's insides
            return name.split(".")[2] in ("get", "names", "all_tasks", "shared_data", "TaskError")
        return True
    assert _violations("bnlstm/runs", allowed) == []


def test_the_app_never_imports_the_model_or_torch():
    def allowed(name):
        return not (name.startswith("bnlstm.nn") or name.split(".")[0] == "torch"
                    or name.startswith("bnlstm.tasks.sequence")
                    or any(name.startswith(f"bnlstm.tasks.{t}.experiment") for t in ("mnist", "text")))
    assert _violations("app", allowed) == []


def test_the_rules_see_a_violation():
    # the checks above read what they claim: a model module importing the trainer fails
    f = ROOT / "bnlstm" / "nn" / "rnn.py"
    names = set(_imports(f))
    assert "torch" in names and "bnlstm.nn.fused" in names
    assert any(n.startswith("bnlstm.training") for n in _imports(ROOT / "bnlstm" / "cli.py"))


def test_no_import_cycle():
    files = _files("bnlstm") + _files("app")
    mods = {_module(f): f for f in files}
    graph = {}
    for m, f in mods.items():
        deps = set()
        for name in _imports(f, top_level_only=True):
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name and name != m:
                deps.add(name)
        graph[m] = deps
    # a package's __init__ importing its own submodules is not a cycle we care about:
    # only cycles between modules where neither is the other's package
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if m.startswith(d + ".") or d.startswith(m + "."):
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2
    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []


def test_serving_a_page_imports_no_torch():
    code = (
        "import sys, pkgutil, importlib\n"
        "import bnlstm_app\n"
        "for m in pkgutil.walk_packages(bnlstm_app.__path__, 'bnlstm_app.'):\n"
        "    if m.name != 'bnlstm_app.main':\n"
        "        importlib.import_module(m.name)\n"
        "from bnlstm import TrainConfig, tasks\n"
        "for t in tasks.all_tasks():\n"
        "    t.check(TrainConfig.for_task(t.name))\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


# Modules still over the line, each capped at its size today (docs/DESIGN.md, "Still to split").
STILL_TO_SPLIT: dict = {}      # a module over the cap, and the lines it may keep


def test_no_module_over_600_lines():
    over = {}
    for f in _files("bnlstm") + _files("app"):
        n = len(f.read_text().splitlines())
        rel = str(f.relative_to(ROOT))
        if n > STILL_TO_SPLIT.get(rel, 600):
            over[rel] = n
    assert over == {}


def test_every_import_of_the_project_names_a_module_that_exists():
    # function-level imports too (a moved module is found here, not only when that code runs)
    import importlib.util
    missing = []
    for f in _files("bnlstm") + _files("app") + _files("benchmarks"):
        tree = ast.parse(f.read_text(), str(f))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                mod = _module(f)
                package = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
                base = package.split(".")
                target = ".".join(base[:len(base) - (node.level - 1)] + ([node.module] if node.module else []))
            elif isinstance(node, ast.ImportFrom):
                target = node.module
            elif isinstance(node, ast.Import):
                target = node.names[0].name
            else:
                continue
            if target.split(".")[0] in ("bnlstm", "bnlstm_app") and importlib.util.find_spec(target) is None:
                missing.append(f"{f.relative_to(ROOT)}:{node.lineno} imports {target}")
    assert missing == []

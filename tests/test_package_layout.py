"""The package's shape: no import cycles, nnsight only in tracing/, a lazy curated API, one home per name,
and a design doc that names every module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "esr_analysis"
HEAVY = ("torch", "transformers", "nnsight", "sae_lens", "sentence_transformers", "peft")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` gives the package name)."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``tree`` imports anywhere (top level and inside functions), except inside
    ``if TYPE_CHECKING:`` blocks (never executed). ``from a import b`` counts as importing module ``a.b`` when
    that is a module, else ``a``; the parent packages Python runs on the way are not counted."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return (found & known) - {module}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(ast.parse(path.read_text(), filename=str(path)), name, path.name == "__init__.py",
                           set(mods))
            for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.x\n"
                     "def f():\n    from .sib import thing\n    from . import sub\n    import z\n")
    known = {"pkg", "pkg.mod", "pkg.sib", "pkg.sub", "pkg.x", "z"}
    assert _imports(tree, "pkg.mod", False, known) == {"pkg.sib", "pkg.sub", "z"}


def test_no_import_cycles_in_the_package():
    graph = _graph()
    assert len(graph) > 40 and graph["esr_analysis.steering.generate"]  # the walk saw the package
    assert _cycles(graph) == [], "import cycles (each list is one strongly connected group of modules)"


def test_only_tracing_imports_nnsight():
    offenders = []
    files = [*PKG.rglob("*.py"), *(ROOT / "scripts").glob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
             *(ROOT / "notebooks").glob("*.py")]
    for path in files:
        if (PKG / "tracing") in path.parents:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "nnsight" or n.startswith("nnsight.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_curated_api_resolves_lazily():
    code = (
        "import sys, esr_analysis as e\n"
        f"heavy = {HEAVY!r}\n"
        "assert not [m for m in heavy if m in sys.modules], 'import esr_analysis loaded a heavy library'\n"
        "names = [n for n in e.__all__ if n != '__version__']\n"
        "assert len(names) >= 20 and set(names) <= set(dir(e))\n"
        "for n in names:\n"
        "    assert getattr(e, n) is not None, n\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, f'resolving the curated API loaded {loaded}'\n"
        "try:\n"
        "    e.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('unknown names must raise AttributeError')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_every_public_name_has_one_home():
    """A public function or class is defined in one module only (re-exports in ``__init__`` don't count)."""
    homes: dict[str, list[str]] = {}
    for name, path in _modules().items():
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                homes.setdefault(node.name, []).append(name)
    twice = {n: m for n, m in homes.items() if len(m) > 1}
    assert twice == {}


@pytest.mark.parametrize("module", sorted(_modules()))
def test_design_doc_names_every_module(module):
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    path = _modules()[module].relative_to(PKG).as_posix()
    entry = path.removesuffix("__init__.py") or "__init__.py"
    assert f"`{entry}`" in design, f"docs/DESIGN.md does not describe {entry} (write its row in the module map)"

"""The docs are true: the README's first example runs as written, every cited section of docs/method.md
exists, and nothing cites the method file that is not in the repository."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CITED_FILES = [*ROOT.glob("esr_analysis/**/*.py"), *ROOT.glob("docs/*.md"), ROOT / "README.md",
               *ROOT.glob("notebooks/*.py"), *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("scripts/*.py"),
               *ROOT.glob("benchmarks/*.py")]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_anchor_rule():
    assert _anchor("Authors' results") == "authors-results"
    assert _anchor("Paper vs code") == "paper-vs-code"


def test_every_cited_method_section_exists():
    method = (ROOT / "docs" / "method.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"(?m)^#{1,6} (.+)$", method)}
    cited: dict[str, list[str]] = {}
    for path in CITED_FILES:
        for anchor in re.findall(r"method\.md#([\w\-]+)", path.read_text()):
            cited.setdefault(anchor, []).append(str(path.relative_to(ROOT)))
    assert len(cited) >= 8, "the package should cite docs/method.md by section"
    missing = {a: files for a, files in cited.items() if a not in anchors}
    assert missing == {}, f"cited sections that docs/method.md does not have: {missing}"


def test_nothing_cites_the_external_method_file():
    stale = [str(p.relative_to(ROOT)) for p in CITED_FILES
             if "esr-method" in p.read_text() or "shared/reference" in p.read_text()]
    assert stale == [], "cite docs/method.md (with a section anchor) instead"


def _readme_first_example() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README.md has no python example"
    return blocks[0]


def test_readme_example_defines_what_it_uses():
    """Static check (fast): every name the first example uses is defined in it or imported by it."""
    import ast
    import builtins

    tree = ast.parse(_readme_first_example())
    defined = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    defined |= {a.asname or a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
                for a in n.names}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assert used - defined - set(dir(builtins)) == set()


@pytest.mark.slow
def test_readme_first_example_runs_as_written():
    """Executes the README's first python block on the embedded model (48 new tokens) and checks what it
    prints and builds: a non-empty steered text, the added vector's norm at 0.6 x the median residual norm,
    and the captured latents for every generated token."""
    code = _readme_first_example()
    namespace: dict = {"__name__": "__readme__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README is ours
    rows = namespace["rows"]
    assert len(rows) == 1 and rows[0].text.strip()
    rec = rows[0].interventions[0]
    assert rec.latent == 551 and rec.delta_norm == pytest.approx(0.6 * rec.median_residual_norm, rel=1e-4)
    assert len(rows[0].latent_acts) == len(rows[0].output_ids) and len(rows[0].latent_acts[0]) == 2
    printed = out.getvalue()
    assert rows[0].text in printed and f"{rec.delta_norm}" in printed


# ---- references in the code's docstrings and comments ------------------------------------------------------

_PATH_REF = re.compile(r"(?<![\w/.\-])((?:tests|scripts)/[\w\-]+\.py|docs/[\w\-]+\.md)\b")
_DOTTED_REF = re.compile(r"(?<![\w.])esr_analysis(?:\.[A-Za-z_]\w*)+")
_RELATIVE_REF = re.compile(r":\w+:`~?(\.[A-Za-z_][\w.]*)`")  # :mod:`.core`, :func:`~.env.why_unavailable`
REFERENCING_FILES = sorted([*ROOT.glob("esr_analysis/**/*.py"), *ROOT.glob("scripts/*.py")])


def _prose(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every docstring (any string statement: module, class, function and attribute
    docstrings) and every comment of a Python file."""
    import ast
    import tokenize

    src = path.read_text()
    out = [(node.lineno, node.value.value) for node in ast.walk(ast.parse(src))
           if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]
    out += [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(src).readline)
            if tok.type == tokenize.COMMENT]
    return out


def _references(text: str, package: str) -> tuple[list[str], list[str]]:
    """The repository paths and the dotted names (relative Sphinx references made absolute against
    ``package``) that ``text`` cites."""
    dotted = _DOTTED_REF.findall(text)
    dotted += [package + ref for ref in _RELATIVE_REF.findall(text)]
    return _PATH_REF.findall(text), dotted


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` names a module, or an attribute (at any depth) of the longest importable module prefix."""
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise  # the module exists but imports something missing: a real failure
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_reference_rules():
    paths, dotted = _references(
        "see ``tests/test_docs.py``, scripts/run_all.py and docs/method.md#metrics; not data/tests/x.py; "
        ":func:`esr_analysis.seeds.derive_seed`, esr_analysis.files. and :mod:`~.fluency`", "esr_analysis.metrics")
    assert paths == ["tests/test_docs.py", "scripts/run_all.py", "docs/method.md"]
    assert dotted == ["esr_analysis.seeds.derive_seed", "esr_analysis.files", "esr_analysis.metrics.fluency"]
    assert _resolves("esr_analysis.seeds.derive_seed") and _resolves("esr_analysis.metrics.fluency")
    assert _resolves("esr_analysis.tracing.sites.ModelSites.where")
    assert not _resolves("esr_analysis.judge.fluency") and not _resolves("esr_analysis.seeds.no_such_name")


def test_every_file_and_module_cited_in_code_exists():
    """Docstrings and comments under ``esr_analysis/`` and ``scripts/`` cite only files (``tests/*.py``,
    ``scripts/*.py``, ``docs/*.md``) and names (``esr_analysis.<module>[.<attribute>...]``) that exist. Imports
    only this package's modules, which import nothing heavy at import time."""
    missing: list[str] = []
    checked: dict[str, bool] = {}
    for path in REFERENCING_FILES:
        rel = path.relative_to(ROOT)
        module = ".".join(rel.with_suffix("").parts)
        package = module.removesuffix(".__init__") if rel.name == "__init__.py" else module.rpartition(".")[0]
        for line, text in _prose(path):
            paths, dotted = _references(text, package)
            missing += [f"{rel}:{line}: {ref}" for ref in paths if not (ROOT / ref).exists()]
            for ref in dotted:
                if ref not in checked:
                    checked[ref] = _resolves(ref)
                if not checked[ref]:
                    missing.append(f"{rel}:{line}: {ref}")
    assert len(checked) > 50, "the scan should find the package's many cross-references"
    assert missing == [], "docstrings/comments cite files or names that do not exist:\n" + "\n".join(missing)

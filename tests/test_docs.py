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

"""The documentation site builds in strict mode, and the Python examples on its pages run.

A page's ```python blocks run in order in one namespace per page, in a
temporary directory. A block that cannot run here (it needs a data set that is
not downloadable offline, a GPU, or a second machine) is preceded by an HTML
comment ``<!-- no-run: why -->``; the test checks that every such comment gives
a reason and that every page with examples runs at least one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = os.path.join(ROOT, "docs")
BLOCK = re.compile(r"(?:<!-- no-run: (?P<why>[^>]*?) -->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def _pages() -> list[str]:
    pages = []
    for folder, _, files in os.walk(DOCS, followlinks=False):
        pages += [
            os.path.relpath(os.path.join(folder, f), DOCS) for f in files if f.endswith(".md")
        ]
    return sorted(pages)


PAGES_WITH_CODE = [
    p for p in _pages() if "```python" in open(os.path.join(DOCS, p), encoding="utf-8").read()
]


def test_site_builds_in_strict_mode(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ("index.html", "installation/index.html", "troubleshooting/index.html"):
        assert (site / page).exists(), page
    tutorials = sorted(p.name for p in (site / "tutorials").iterdir() if p.is_dir())
    assert tutorials[:6] == [
        "01_quickstart", "02_how_fedluar_works", "03_comparing_methods",
        "04_paper_scale_gpu", "05_your_own_model", "06_privacy_and_budget",
    ]  # fmt: skip
    # Notebooks are rendered with their committed outputs, plots included.
    quickstart = (site / "tutorials" / "01_quickstart" / "index.html").read_text("utf-8")
    assert "data:image/png;base64" in quickstart
    api = (site / "api" / "index.html").read_text("utf-8")
    assert "plot_recycling_timeline" in api and "FederatedTrainer" in api
    # Every relative link of every page reaches a file of the site: the tutorials' links,
    # written for the repository, are rewritten by docs/hooks/notebook_links.py.
    broken = []
    for page in site.rglob("*.html"):
        for href in re.findall(r'href="([^"]+)"', page.read_text("utf-8")):
            if re.match(r"[a-z]+:|#|/", href):  # external, in-page, site-absolute (404 page)
                continue
            target = (page.parent / href.split("#")[0]).resolve()
            if not (target.is_file() or (target / "index.html").is_file()):
                broken.append(f"{page.relative_to(site)}: {href}")
    assert not broken, broken
    privacy = (site / "tutorials" / "06_privacy_and_budget" / "index.html").read_text("utf-8")
    assert 'href="../../howto/privacy-and-budget/"' in privacy


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_page_examples_run(page, tmp_path, monkeypatch):
    text = open(os.path.join(DOCS, page), encoding="utf-8").read()
    blocks = list(BLOCK.finditer(text))
    assert blocks
    for block in blocks:
        if block["why"] is not None:
            assert block["why"].strip(), f"{page}: a no-run comment needs a reason"
    runnable = [b["code"] for b in blocks if b["why"] is None]
    assert runnable, f"{page}: every example is no-run; at least one must run"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    for number, code in enumerate(runnable, start=1):
        exec(compile(code, f"{page} (example {number})", "exec"), namespace)

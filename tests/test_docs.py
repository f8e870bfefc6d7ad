"""Every docs example runs, and the built site shows each one's code (not a snippet marker)."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_docs_example_runs(example: Path, request: pytest.FixtureRequest) -> None:
    env = dict(os.environ)
    if "REDIS_URL" in example.read_text():  # a RedisRelay example: the session's own redis-server
        env["REDIS_URL"] = request.getfixturevalue("redis_server").url
    proc = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `make docs` builds it (strict: a warning fails the build)."""
    out = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).parent / "mkdocs"
    proc = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(out)],
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _page_texts(site: Path) -> dict[str, str]:
    """Each built page's visible code text: tags stripped, entities decoded."""
    texts = {}
    for page in site.rglob("*.html"):
        if page.name == "404.html":
            continue
        source = page.read_text()
        texts[str(page.relative_to(site))] = html.unescape(re.sub(r"<[^>]+>", "", source))
    return texts


def _significant_lines(example: Path) -> list[str]:
    lines = [ln.strip() for ln in example.read_text().splitlines()]
    return [ln for ln in lines if len(ln) > 12 and not ln.startswith("#")]


@pytest.mark.timeout(120)
def test_built_pages_show_no_snippet_marker(site: Path) -> None:
    bad = [name for name, text in _page_texts(site).items() if "--8<--" in text or "--8 <" in text]
    assert not bad, f"pages showing a snippet marker instead of code: {bad}"


@pytest.mark.timeout(120)
def test_every_example_is_rendered_on_a_page(site: Path) -> None:
    texts = _page_texts(site)
    missing = []
    for example in EXAMPLES:
        lines = _significant_lines(example)
        assert lines, example
        if not any(all(ln in text for ln in lines) for text in texts.values()):
            missing.append(example.name)
    assert not missing, f"examples whose code appears on no built page: {missing}"

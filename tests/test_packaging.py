"""The release as a user gets it: build the sdist and the wheel, install the wheel into a fresh
venv outside the checkout, and run the demo and the Quickstart example from there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import callstream
from callstream.cli import AGENTS_MISSING, ANSWER

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = callstream.__version__  # the one version source ([tool.hatch.version])


def run(*cmd: str | Path, cwd: Path, timeout: float = 45) -> str:
    # No PYTHONPATH and a working directory outside the checkout: only the installed package is seen.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_the_version_is_written_once() -> None:
    assert "version" not in PROJECT and PROJECT["dynamic"] == ["version"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make dist`: the sdist, then the wheel built from it (so the sdist is known to build)."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT, cwd=ROOT, timeout=60)
    return out


def test_sdist_holds_what_a_release_needs(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    assert sdist.name == f"callstream-{VERSION}.tar.gz"
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    for needed in ("pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE", "src/callstream/py.typed"):
        assert needed in names, needed
    assert "src/callstream/testing/openai_server.py" in names and "docs/examples/quickstart_sync.py" in names
    assert not [n for n in names if n.startswith((".ci/", ".venv", "site/", "dist/"))]


def test_wheel_metadata_is_complete(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"callstream-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(f"callstream-{VERSION}.dist-info/METADATA").decode()
    assert {"callstream/py.typed", "callstream/testing/_server.py", "callstream/testing/openai_server.py"} <= names
    assert f"callstream-{VERSION}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith("tests/")]
    headers = [line.split(": ", 1) for line in meta.split("\n\n", 1)[0].splitlines()]
    fields: dict[str, list[str]] = {}
    for key, value in headers:
        fields.setdefault(key, []).append(value)
    assert fields["Version"] == [VERSION] and fields["Summary"] and fields["Author"] and fields["Keywords"]
    assert fields["License-Expression"] == ["MIT"]
    assert fields["Requires-Python"] == [">=3.11"]
    assert {url.split(",")[0] for url in fields["Project-URL"]} >= {"Homepage", "Repository", "Changelog"}
    versions = [
        c.rsplit(" ", 1)[-1] for c in fields["Classifier"] if c.startswith("Programming Language :: Python :: 3.")
    ]
    assert versions and versions[0] == "3.11" and "Typing :: Typed" in fields["Classifier"]
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in versions  # this run's Python is claimed
    assert {"openai", "agents", "fastapi", "flask", "django"} <= set(fields["Provides-Extra"])
    assert "# callstream" in meta.split("\n\n", 1)[1]  # the README is the long description


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_wheel_in_a_fresh_venv_runs_the_demo_and_the_quickstart(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # The wheel with its declared dependencies (nothing else: no extras), resolved against the lock
    # and pip's cache. This pip installs into the new venv (`--python`).
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
        "-c", ROOT / "constraints.txt", wheel, cwd=tmp_path, timeout=75,
    )  # fmt: skip
    where = json.loads(
        run(python, "-c", "import callstream, json; print(json.dumps([callstream.__file__]))", cwd=tmp_path)
    )[0]
    assert Path(where).is_relative_to(venv) and (Path(where).parent / "py.typed").exists()

    # The demo: the chain part runs; the agent part says which extra it needs.
    out = run(python, "-m", "callstream", "demo", "--delay", "0", cwd=tmp_path)
    assert ANSWER in out and "status completed" in out and AGENTS_MISSING in out
    assert "usage: callstream" in run(venv / "bin" / "callstream", "--help", cwd=tmp_path)

    # The Quickstart example, copied out of the checkout.
    example = shutil.copy(ROOT / "docs" / "examples" / "quickstart_sync.py", tmp_path / "quickstart.py")
    out = run(python, example, cwd=tmp_path)
    assert out.splitlines() == ["Otters hold hands while they sleep."] * 2

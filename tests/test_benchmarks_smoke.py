"""The benchmarks run (tiny sizes), so they cannot rot between `make bench` runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.__main__ import main

from tests.web.servers import SERVERS


@pytest.mark.timeout(120)
def test_benchmarks_quick_run(tmp_path: Path) -> None:
    sections = ["transport", "langchain", "latency", "cancellation", "memory", "scale"]
    assert main(["--quick", "--out", str(tmp_path), "--only", *sections]) == 0
    results = json.loads((tmp_path / "latest.json").read_text())
    assert set(sections) <= set(results)
    rows = {r["row"]: r for r in results["transport"]}
    assert rows["from_callback, DequeSink"]["items_per_s"] > 0
    assert "### langchain" in (tmp_path / "latest.md").read_text()


@pytest.mark.timeout(120)
def test_relay_benchmark_quick_run(tmp_path: Path) -> None:
    from benchmarks.relay import main as relay_main

    assert relay_main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "relay.json").read_text())
    rows = {r["row"]: r for r in results["throughput"]}
    assert rows["from_callback (raw events): publish + 10 subscriber(s)"]["events_per_s"] > 0
    assert len(results["resume"]) == 3


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_web_benchmark_quick_run(tmp_path: Path) -> None:
    # every reference server, with the benchmark's own `/native` route mounted on its app
    from benchmarks.web import main as web_main

    assert web_main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "web.json").read_text())
    rows = {r["row"]: r for r in results["throughput"]}
    assert set(rows) == set(SERVERS)
    assert all(r["tokens_per_s_native"] > 0 and r["tokens_per_s_callstream"] > 0 for r in rows.values())

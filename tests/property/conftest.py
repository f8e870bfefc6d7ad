"""The property tests run callstream's hot loops many thousand times: `make test` does not
measure them for coverage (pytest-cov's `no_cover`). Under the line tracer they take about
twice as long, past the 20 s hang guard on 2 cores, and the unit tests cover the same code."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.no_cover)

"""The property tests run callstream's hot loops many thousand times.

- `make test` does not measure them for coverage (pytest-cov's `no_cover`): under the line
  tracer they take about twice as long, and the unit tests cover the same code;
- they get a 120 s limit rather than the suite's default (pyproject): hundreds of examples
  each, slowed but not killed on a loaded machine; a hang still ends.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a conftest's hook sees the whole session's items: only this directory's
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.no_cover)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(120))

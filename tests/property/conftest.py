"""Property tests run hundreds of examples each: a longer limit than the suite's 20 s (pyproject),
so that a loaded machine slows them without killing the run; a hang still ends in two minutes."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a conftest's hook sees the whole session's items: only this directory's
    for item in items:
        if item.path.is_relative_to(HERE) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(120))

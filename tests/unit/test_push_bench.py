"""The push/Haystack benchmark runs (tiny sizes), so it cannot rot."""

from __future__ import annotations

import pytest
from benchmarks.push import main


@pytest.mark.timeout(120)
def test_push_benchmark_quick_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| from_push, DequeSink |" in out and "MockChatGenerator" in out and "OpenAIChatGenerator" in out

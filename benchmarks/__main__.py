"""callstream side by side with the alternatives, in one run: `make bench`.

Every figure is a median over repeats, and every claim is a ratio against an
alternative measured in the same process. Writes `benchmarks/results/latest.md`
and `latest.json`. `--quick` runs tiny sizes (the test suite uses it so the
benchmarks cannot rot); `--only scale langchain` refreshes some sections and
keeps the others. One module per section; the harness is `harness.py`.
"""

from __future__ import annotations

import sys

from benchmarks import answer_only, cancellation, latency, memory, reliability, scale, throughput, transport
from benchmarks.harness import Section
from benchmarks.harness import main as run_sections

#: the sections, in report order
SECTIONS: dict[str, Section] = {
    "transport": transport.run,
    "langchain": throughput.run,
    "latency": latency.run,
    "cancellation": cancellation.run,
    "memory": memory.run,
    "scale": scale.run,
    "answer_only": answer_only.run,
    "reliability": reliability.run,
}


def main(argv: list[str] | None = None) -> int:
    return run_sections(SECTIONS, argv)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m callstream demo`: stream on an embedded scripted model."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from ._stream import from_callback

__all__ = ("main",)


def _demo_callback(args: argparse.Namespace) -> int:
    words = "callstream turns any callback API into a generator, with timeouts and cancellation.".split(" ")

    def producer(emit: object) -> str:
        for i, word in enumerate(words):
            time.sleep(0.03)
            emit((" " if i else "") + word)  # type: ignore[operator]
        return "done"

    t0 = time.monotonic()
    first = None
    with from_callback(producer, timeout=10) as stream:
        for token in stream:
            first = first or time.monotonic() - t0
            print(token, end="", flush=True)
    print(f"\n[{len(words)} tokens, first after {first or 0:.3f} s, output={stream.output!r}]")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callstream")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="stream on an embedded scripted model (no network, no API key)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo_callback(args)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Hypothesis strategies, kept apart from the tests (as attrs does)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


class AlwaysEqual:
    """An object equal to everything: a naive `item == SENTINEL` check fails on it."""

    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "AlwaysEqual()"


def _fresh(factory: Any) -> st.SearchStrategy[Any]:
    return st.builds(factory)


awkward = st.one_of(
    st.sampled_from([None, "", "[DONE]", 0, False, b"", "\n", "data: x"]),
    _fresh(AlwaysEqual),
    _fresh(lambda: ValueError("x")),
    _fresh(StopIteration),
    _fresh(lambda: ("__error__", KeyError("k"))),
)

items = st.one_of(awkward, st.text(max_size=8), st.integers(), st.binary(max_size=4))
item_lists = st.lists(items, max_size=60)

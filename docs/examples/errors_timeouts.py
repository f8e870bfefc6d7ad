"""Errors arrive as the same object; timeouts name the limit that was hit."""

import callstream
from callstream.testing import ScriptedChatModel

failing = ScriptedChatModel(responses=["abcdef"], fail_after=3, error=ValueError("model crashed"))
got = []
try:
    for token in callstream.iter_callbacks(failing, "hi").tokens():
        got.append(token)
except ValueError as exc:
    print("raised after", got, "-", exc.__notes__[-1])
assert got == ["a", "b", "c"]

slow = ScriptedChatModel(responses=["late"], ttft=2.0)
try:
    for _token in callstream.iter_callbacks(slow, "hi", first_token_timeout=0.1).tokens():
        pass
except callstream.StreamTimeout as exc:
    print("timed out:", exc.limit, exc)
    assert exc.limit == "first_token_timeout"

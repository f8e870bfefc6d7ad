"""Test your own streaming code with callstream.testing: no network, no key."""

import callstream
from callstream.testing import ScriptedChatModel


def summarize(model) -> str:  # your application code
    return "".join(callstream.iter_callbacks(model, "summarize").tokens())


def test_summarize_streams_the_answer() -> None:
    model = ScriptedChatModel(responses=["Short summary."], chunk_size=5)
    assert summarize(model) == "Short summary."
    assert model.calls == 1


def test_summarize_surfaces_model_errors() -> None:
    model = ScriptedChatModel(responses=["x" * 50], fail_after=5, error=TimeoutError("upstream"))
    try:
        summarize(model)
    except TimeoutError:
        pass
    else:
        raise AssertionError("expected the model's error")


test_summarize_streams_the_answer()
test_summarize_surfaces_model_errors()
print("ok")

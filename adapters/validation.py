"""What the three reference apps check before any work starts, in one place.

Every bad request is answered with a 4xx and a JSON body in the OpenAI API's
error shape, on every route of every app:

```json
{"error": {"message": "...", "type": "invalid_request_error", "param": "messages[0].role", "code": "invalid_value"}}
```

`ApiError` carries the status, that body and any headers (`Allow` on a 405);
each app turns it into its framework's response. `chat_request(body)` checks
a `/v1/chat/completions` body as the OpenAI API does (required fields, types,
ranges, roles, content parts, the tool-call sequence, unknown parameters) and
answers a parameter this app cannot honour (`n > 1`, `tools`, `logprobs`,
audio...) with a 400 that says so. `thread_id(...)` and `decision(body)` check
the approval routes' thread id and decision body, `run_request(body)` a `POST /runs` body and
`run_key(...)` a run's key in a URL. `read_json(...)` applies the content type
(415), the body-size limit (413) and the JSON syntax (400) checks.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from langchain_core.messages import AIMessage, BaseMessage, FunctionMessage, HumanMessage, SystemMessage, ToolMessage

#: The largest request body accepted, in bytes (`CALLSTREAM_MAX_BODY`, default 1 MiB).
MAX_BODY = int(os.environ.get("CALLSTREAM_MAX_BODY", str(1 << 20)))


class ApiError(Exception):
    """A request the app refuses: a status, an OpenAI-shaped error body, headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def json(self) -> str:
        """The body as ASCII JSON: whatever a client sent, echoed back, encodes."""
        return json.dumps(self.body())


def not_found(method: str, path: str) -> ApiError:
    return ApiError(404, f"Invalid URL ({method} {path}): the routes are {ROUTES}.", code="not_found")


def method_not_allowed(method: str, allowed: Iterable[str]) -> ApiError:
    allow = ", ".join(allowed)
    return ApiError(
        405,
        f"Method {method} is not allowed here; allowed: {allow}.",
        code="method_not_allowed",
        headers={"Allow": allow},
    )


def server_error() -> ApiError:
    return ApiError(500, "The server had an error while processing your request.", code="internal_error")


ROUTES = (
    "GET /, GET /stream?q=, GET /agent?q=, GET /approval?q=&thread=, POST /approval/{thread}/decision, "
    "GET /health, POST /v1/chat/completions, POST /runs, GET /runs/{key}/stream, "
    "POST /runs/{key}/cancel"
)

# -- the body: content type, size, JSON -------------------------------------------------


def check_content_type(value: str | None) -> None:
    """JSON, in UTF-8 (RFC 8259). A missing header is read as JSON."""
    if not value:
        return
    media, _, params = value.partition(";")
    media = media.strip().lower()
    charset = "utf-8"
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip('"').lower()
    if (media == "application/json" or (media.startswith("application/") and media.endswith("+json"))) and (
        charset in ("utf-8", "utf8")
    ):
        return
    raise ApiError(
        415,
        f"Unsupported Content-Type {value!r}: send the body as JSON with 'Content-Type: application/json'.",
        code="unsupported_media_type",
    )


def too_large() -> ApiError:
    return ApiError(
        413, f"The request body is larger than this server accepts ({MAX_BODY} bytes).", code="request_too_large"
    )


def check_length(value: str | None) -> None:
    """The announced `Content-Length`, refused before reading a byte if too large."""
    if value is None or value == "":
        return
    if not value.isdigit():
        raise ApiError(400, f"Invalid Content-Length header: {value!r}.", code="invalid_header")
    if int(value) > MAX_BODY:
        raise too_large()


class Body:
    """A body read piece by piece (sans-I/O): 413 as soon as it passes `MAX_BODY`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_BODY:
            raise too_large()
        self.parts.append(chunk)

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def read_limited(read: Callable[[int], bytes]) -> bytes:
    """Read a body through `read(n)` until EOF, within `MAX_BODY` (a chunked body has no length)."""
    body = Body()
    while True:
        try:
            chunk = read(65536)
        except Exception as exc:  # the client sent less than it announced, or left
            raise unreadable() from exc
        if not chunk:
            return body.bytes()
        body.add(chunk)


def unreadable() -> ApiError:
    return ApiError(400, "The request body could not be read completely.", code="incomplete_body")


def _constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """The body as JSON, UTF-8 only: no NaN/Infinity; too deep a nesting is an error, not a crash.

    A string with a lone UTF-16 surrogate (`"\\ud83d"` not followed by its low
    half) is refused too: it is no Unicode text, and a model's client cannot send it on.
    """
    try:
        text = raw.decode("utf-8")
        value = json.loads(text.removeprefix("\ufeff"), parse_constant=_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ApiError(
            400,
            "We could not parse the JSON body of your request: the API expects a JSON object, in UTF-8.",
            code="invalid_json",
        ) from None
    _walk(value, check_strings="\\u" in text)  # only an escape can make a lone surrogate
    return value


#: The deepest nesting of arrays and objects accepted in a body.
MAX_DEPTH = 64


def _walk(value: Any, *, check_strings: bool) -> None:
    """Refuse a body nested deeper than `MAX_DEPTH`, or a string with a lone surrogate (iteratively)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if check_strings and not _is_text(item):
                raise ApiError(
                    400,
                    f"Invalid string in '{path or 'body'}': it holds a lone UTF-16 surrogate, which is not text.",
                    param=path or None,
                    code="invalid_value",
                )
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth >= MAX_DEPTH:
            raise ApiError(
                400, f"The JSON body is nested more than {MAX_DEPTH} levels deep.", param=path or None, code="too_deep"
            )
        if isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, path, depth))
                stack.append((child, f"{path}.{key}" if path else key, depth + 1))
        else:
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))


def _is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def read_json(content_type: str | None, content_length: str | None, read: Callable[[int], bytes]) -> Any:
    """The three checks every JSON route makes, in the order a client can fix them."""
    check_content_type(content_type)
    check_length(content_length)
    return parse_json(read_limited(read))


# -- the chat-completions body --------------------------------------------------------

_TYPE_NAMES = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "decimal",
    str: "string",
    list: "array",
    dict: "object",
}


def _kind(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _expected(param: str, value: Any, expected: str) -> NoReturn:
    raise ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_article(_kind(value))} instead.",
        param=param,
        code="invalid_type",
    )


def _missing(param: str) -> NoReturn:
    raise ApiError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _unknown(param: str) -> NoReturn:
    raise ApiError(400, f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter")


def _invalid_value(param: str, value: Any, allowed: Iterable[str]) -> NoReturn:
    choices = [f"'{a}'" for a in allowed]
    listed = ", ".join(choices[:-1]) + f", and {choices[-1]}" if len(choices) > 1 else choices[0]
    raise ApiError(
        400,
        f"Invalid value for '{param}': {json.dumps(value)}. Supported values are: {listed}.",
        param=param,
        code="invalid_value",
    )


def unsupported(param: str, why: str) -> NoReturn:
    raise ApiError(400, f"Unsupported parameter: '{param}' {why}", param=param, code="unsupported_parameter")


def _string(param: str, value: Any) -> str:
    if not isinstance(value, str):
        _expected(param, value, "a string")
    return value


def _boolean(param: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _expected(param, value, "a boolean")
    return value


def _object(param: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        _expected(param, value, "an object")
    return value


def _array(param: str, value: Any, *, min_length: int = 0) -> list[Any]:
    if not isinstance(value, list):
        _expected(param, value, "an array")
    if len(value) < min_length:
        raise ApiError(
            400,
            f"Invalid '{param}': empty array. Expected an array with minimum length {min_length},"
            " but got an empty array instead.",
            param=param,
            code="empty_array",
        )
    return value


def _integer(param: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _expected(param, value, "an integer")
    _range(param, value, low, high, "integer")
    return value


def _number(param: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _expected(param, value, "a number")
    _range(param, value, low, high, "decimal")
    return value


def _range(param: str, value: float, low: float | None, high: float | None, noun: str) -> None:
    if low is not None and value < low:
        raise ApiError(
            400,
            f"Invalid '{param}': {noun} below minimum value. Expected a value >= {low}, but got {value} instead.",
            param=param,
            code=f"{noun}_below_min_value",
        )
    if high is not None and value > high:
        raise ApiError(
            400,
            f"Invalid '{param}': {noun} above maximum value. Expected a value <= {high}, but got {value} instead.",
            param=param,
            code=f"{noun}_above_max_value",
        )


def _enum(param: str, value: Any, allowed: tuple[str, ...]) -> str:
    _string(param, value)
    if value not in allowed:
        _invalid_value(param, value, allowed)
    return str(value)


def _keys(param: str, obj: dict[str, Any], allowed: Iterable[str], required: Iterable[str] = ()) -> None:
    known = set(allowed)
    for key in obj:
        if key not in known:
            _unknown(f"{param}.{key}")
    for key in required:
        if key not in obj:
            _missing(f"{param}.{key}")


# Parameters passed on to the chat model (`model.bind(**kwargs)`): the model
# applies them as the OpenAI API does, or ignores those it does not know.
_FORWARDED: dict[str, Callable[[str, Any], Any]] = {
    "frequency_penalty": lambda p, v: _number(p, v, -2, 2),
    "presence_penalty": lambda p, v: _number(p, v, -2, 2),
    "temperature": lambda p, v: _number(p, v, 0, 2),
    "top_p": lambda p, v: _number(p, v, 0, 1),
    "max_tokens": lambda p, v: _integer(p, v, 1),
    "max_completion_tokens": lambda p, v: _integer(p, v, 1),
    "seed": lambda p, v: _integer(p, v),
    "stop": lambda p, v: _stop(p, v),
    "logit_bias": lambda p, v: _logit_bias(p, v),
    "user": _string,
    "prompt_cache_key": _string,
    "safety_identifier": _string,
    "reasoning_effort": lambda p, v: _enum(p, v, ("none", "minimal", "low", "medium", "high", "xhigh")),
    "verbosity": lambda p, v: _enum(p, v, ("low", "medium", "high")),
    "service_tier": lambda p, v: _enum(p, v, ("auto", "default", "flex", "scale", "priority")),
    "response_format": lambda p, v: _response_format(p, v),
}

# Parameters checked, then without effect on the answer.
_ACCEPTED: dict[str, Callable[[str, Any], Any]] = {
    "metadata": lambda p, v: _metadata(p, v),
    "parallel_tool_calls": _boolean,  # only means something with `tools`
}

_CHAIN = "this endpoint answers with its own chain (prompt | model | parser)"
_TOOLS = f"is not supported: {_CHAIN}, which calls no tools of yours."

# Parameters this app cannot honour: refused when they ask for anything but the default.
_UNSUPPORTED: dict[str, tuple[Callable[[str, Any], Any], Callable[[Any], bool], str]] = {
    "n": (lambda p, v: _integer(p, v, 1, 128), lambda v: v == 1, f"> 1 is not supported: {_CHAIN}, one answer."),
    "tools": (_array, lambda v: not v, _TOOLS),
    "functions": (_array, lambda v: not v, _TOOLS),
    "tool_choice": (lambda p, v: _choice(p, v, ("none", "auto", "required")), lambda v: v == "none", _TOOLS),
    "function_call": (lambda p, v: _choice(p, v, ("none", "auto")), lambda v: v == "none", _TOOLS),
    "logprobs": (_boolean, lambda v: not v, "is not supported: the streamed text carries no log probabilities."),
    "top_logprobs": (
        lambda p, v: _integer(p, v, 0, 20),
        lambda v: False,
        "is not supported: the streamed text carries no log probabilities.",
    ),
    "modalities": (
        lambda p, v: [_enum(f"{p}[{i}]", m, ("text", "audio")) for i, m in enumerate(_array(p, v))],
        lambda v: "audio" not in v,
        "with 'audio' is not supported: this endpoint answers in text.",
    ),
    "audio": (_object, lambda v: False, "is not supported: this endpoint answers in text."),
    "prediction": (_object, lambda v: False, "is not supported by this endpoint."),
    "web_search_options": (_object, lambda v: False, "is not supported by this endpoint."),
    "store": (_boolean, lambda v: not v, "is not supported: this endpoint stores no completions."),
}


def _choice(param: str, value: Any, modes: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        _expected(param, value, "one of a string or an object")
    return _enum(param, value, modes)


def _stop(param: str, value: Any) -> Any:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        _expected(param, value, "one of a string or an array of strings")
    if len(value) > 4:
        raise ApiError(
            400, f"Invalid '{param}': at most 4 stop sequences, got {len(value)}.", param=param, code="invalid_value"
        )
    return [_string(f"{param}[{i}]", s) for i, s in enumerate(value)]


def _logit_bias(param: str, value: Any) -> dict[str, int]:
    for key, bias in _object(param, value).items():
        if not key.isdigit():
            _invalid_value(f"{param}", key, ("token ids as strings of digits",))
        _integer(f"{param}.{key}", bias, -100, 100)
    return dict(value)


def _metadata(param: str, value: Any) -> dict[str, str]:
    obj = _object(param, value)
    for key, val in obj.items():
        _string(f"{param}.{key}", val)
    return obj


def _response_format(param: str, value: Any) -> dict[str, Any]:
    obj = _object(param, value)
    kind = _enum(f"{param}.type", obj.get("type"), ("text", "json_object", "json_schema"))
    if kind == "json_schema":
        _keys(param, obj, ("type", "json_schema"), ("json_schema",))
        schema = _object(f"{param}.json_schema", obj["json_schema"])
        _keys(f"{param}.json_schema", schema, ("name", "description", "schema", "strict"), ("name",))
        _string(f"{param}.json_schema.name", schema["name"])
    else:
        _keys(param, obj, ("type",))
    return obj


_ROLES = ("system", "developer", "user", "assistant", "tool", "function")

# role -> (allowed keys, required keys, content part types; None: content may be null)
_MESSAGE_RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "system": (("role", "content", "name"), ("content",), ("text",)),
    "developer": (("role", "content", "name"), ("content",), ("text",)),
    "user": (("role", "content", "name"), ("content",), ("text", "image_url", "input_audio", "file")),
    "assistant": (
        ("role", "content", "name", "refusal", "tool_calls", "function_call", "audio"),
        (),
        ("text", "refusal"),
    ),
    "tool": (("role", "content", "tool_call_id"), ("content", "tool_call_id"), ("text",)),
    "function": (("role", "content", "name"), ("content", "name"), ()),
}


def _part(param: str, part: Any, allowed: tuple[str, ...]) -> None:
    obj = _object(param, part)
    if "type" not in obj:
        _missing(f"{param}.type")
    kind = _enum(f"{param}.type", obj["type"], allowed)
    if kind in ("text", "refusal"):
        _keys(param, obj, ("type", kind), (kind,))
        _string(f"{param}.{kind}", obj[kind])
    elif kind == "image_url":
        _keys(param, obj, ("type", "image_url"), ("image_url",))
        image = _object(f"{param}.image_url", obj["image_url"])
        _keys(f"{param}.image_url", image, ("url", "detail"), ("url",))
        _string(f"{param}.image_url.url", image["url"])
        if "detail" in image:
            _enum(f"{param}.image_url.detail", image["detail"], ("auto", "low", "high"))
    elif kind == "input_audio":
        _keys(param, obj, ("type", "input_audio"), ("input_audio",))
        audio = _object(f"{param}.input_audio", obj["input_audio"])
        _keys(f"{param}.input_audio", audio, ("data", "format"), ("data", "format"))
        _string(f"{param}.input_audio.data", audio["data"])
        _enum(f"{param}.input_audio.format", audio["format"], ("wav", "mp3"))
    else:  # file
        _keys(param, obj, ("type", "file"), ("file",))
        file = _object(f"{param}.file", obj["file"])
        _keys(f"{param}.file", file, ("file_data", "file_id", "filename"))
        for key, val in file.items():
            _string(f"{param}.file.{key}", val)


def _content(param: str, value: Any, parts: tuple[str, ...], nullable: bool) -> Any:
    if value is None and nullable:
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not parts:
        names = "a string" if not parts else "one of a string or array of objects"
        _expected(param, value, names)
    _array(param, value, min_length=1)
    for i, part in enumerate(value):
        _part(f"{param}[{i}]", part, parts)
    return value


def _tool_calls(param: str, value: Any) -> list[dict[str, Any]]:
    calls = _array(param, value)
    for i, call in enumerate(calls):
        p = f"{param}[{i}]"
        obj = _object(p, call)
        _keys(p, obj, ("id", "type", "function"), ("id", "type", "function"))
        _string(f"{p}.id", obj["id"])
        _enum(f"{p}.type", obj["type"], ("function",))
        fn = _object(f"{p}.function", obj["function"])
        _keys(f"{p}.function", fn, ("name", "arguments"), ("name", "arguments"))
        _string(f"{p}.function.name", fn["name"])
        _string(f"{p}.function.arguments", fn["arguments"])
    return calls


def _message(param: str, value: Any) -> dict[str, Any]:
    obj = _object(param, value)
    if "role" not in obj:
        _missing(f"{param}.role")
    role = _enum(f"{param}.role", obj["role"], _ROLES)
    allowed, required, parts = _MESSAGE_RULES[role]
    _keys(param, obj, allowed, required)
    nullable = role in ("assistant", "function")
    if role == "assistant" and obj.get("content") is None and not (obj.get("tool_calls") or obj.get("function_call")):
        _missing(f"{param}.content")
    _content(f"{param}.content", obj.get("content"), parts, nullable)
    for key in ("name", "tool_call_id", "refusal"):
        if obj.get(key) is not None or key in required:
            _string(f"{param}.{key}", obj[key])
    if obj.get("tool_calls") is not None:
        _tool_calls(f"{param}.tool_calls", obj["tool_calls"])
    for key in ("function_call", "audio"):
        if obj.get(key) is not None:
            _object(f"{param}.{key}", obj[key])
    return obj


def _sequence(messages: list[dict[str, Any]]) -> None:
    """A tool message answers a call of the assistant message before it, and every call is answered."""
    waiting: dict[str, int] = {}
    for i, m in enumerate(messages):
        if m["role"] == "tool":
            if m["tool_call_id"] not in waiting:
                raise ApiError(
                    400,
                    f"Invalid parameter: messages with role 'tool' must be a response to a preceding message with"
                    f" 'tool_calls' (messages[{i}].tool_call_id {json.dumps(m['tool_call_id'])} answers none).",
                    param=f"messages[{i}].tool_call_id",
                    code="invalid_value",
                )
            del waiting[m["tool_call_id"]]
            continue
        if waiting:
            ids = ", ".join(json.dumps(k) for k in waiting)
            j = min(waiting.values())
            raise ApiError(
                400,
                f"An assistant message with 'tool_calls' must be followed by tool messages responding to each"
                f" 'tool_call_id'. The following tool_call_ids did not have response messages: {ids}.",
                param=f"messages[{j}].tool_calls",
                code="invalid_value",
            )
        if m["role"] == "assistant":
            waiting = {c["id"]: i for c in m.get("tool_calls") or []}
    # calls left unanswered by the last message are the client's own business (OpenAI agrees)


def _to_langchain(m: dict[str, Any]) -> BaseMessage:
    """One checked OpenAI message as the LangChain message a chat model takes."""
    role, content = m["role"], m.get("content")
    name = {"name": m["name"]} if m.get("name") is not None else {}
    if role in ("system", "developer"):
        extra = {"__openai_role__": "developer"} if role == "developer" else {}
        return SystemMessage(content=content, additional_kwargs=extra, **name)
    if role == "user":
        return HumanMessage(content=content, **name)
    if role == "tool":
        return ToolMessage(content=content, tool_call_id=m["tool_call_id"])
    if role == "function":
        return FunctionMessage(content=content or "", name=m["name"])
    calls, invalid = [], []
    for c in m.get("tool_calls") or []:
        fn = c["function"]
        try:
            args = json.loads(fn["arguments"])
        except (ValueError, RecursionError):
            args = None
        if isinstance(args, dict):
            calls.append({"name": fn["name"], "args": args, "id": c["id"], "type": "tool_call"})
        else:
            error = "arguments are not a JSON object"
            invalid.append(
                {
                    "name": fn["name"],
                    "args": fn["arguments"],
                    "id": c["id"],
                    "error": error,
                    "type": "invalid_tool_call",
                }
            )
    return AIMessage(content=content or "", tool_calls=calls, invalid_tool_calls=invalid, **name)


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat-completions request, ready for the chain."""

    model: str
    messages: list[BaseMessage]
    stream: bool = False
    include_usage: bool = False
    #: parameters for the chat model (`model.bind(**model_kwargs)`)
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def chat_request(body: Any) -> ChatRequest:
    """Check a `/v1/chat/completions` body; raise `ApiError` (400) on the first problem."""
    _require_object(body)
    known = {"model", "messages", "stream", "stream_options", *_FORWARDED, *_ACCEPTED, *_UNSUPPORTED}
    for key in body:
        if key not in known:
            _unknown(key)
    if "model" not in body:
        _missing("model")
    model = _string("model", body["model"])
    if not model:
        raise ApiError(400, "Invalid 'model': empty string.", param="model", code="invalid_value")
    if "messages" not in body:
        _missing("messages")
    raw = _array("messages", body["messages"], min_length=1)
    messages = [_message(f"messages[{i}]", m) for i, m in enumerate(raw)]
    _sequence(messages)
    stream = body.get("stream") is not None and _boolean("stream", body["stream"])
    include_usage = False
    if body.get("stream_options") is not None:
        if not stream:
            raise ApiError(
                400,
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        options = _object("stream_options", body["stream_options"])
        _keys("stream_options", options, ("include_usage", "include_obfuscation"))
        if options.get("include_obfuscation") is not None:
            _boolean("stream_options.include_obfuscation", options["include_obfuscation"])
        if options.get("include_usage") is not None:
            include_usage = _boolean("stream_options.include_usage", options["include_usage"])
    kwargs = {}
    for key, check in _FORWARDED.items():
        if body.get(key) is not None:
            kwargs[key] = check(key, body[key])
    for key, check in _ACCEPTED.items():
        if body.get(key) is not None:
            check(key, body[key])
    for key, (check, fine, why) in _UNSUPPORTED.items():
        if body.get(key) is not None:
            check(key, body[key])
            if not fine(body[key]):
                unsupported(key, why)
    return ChatRequest(model, [_to_langchain(m) for m in messages], stream, include_usage, kwargs)


# -- the approval routes ----------------------------------------------------------------

DECISIONS = ("approve", "reject")
_THREAD = re.compile(r"[A-Za-z0-9_-]{1,64}")


def thread_id(value: str | None, param: str = "thread") -> str:
    """A conversation thread id sent by the page: 1-64 letters, digits, '-' or '_'."""
    if value is None:
        _missing(param)
    if not _THREAD.fullmatch(value):
        raise ApiError(
            400,
            f"Invalid '{param}': {json.dumps(value[:80])}; a thread id is 1-64 letters, digits, '-' or '_'.",
            param=param,
            code="invalid_value",
        )
    return value


def _require_object(body: Any) -> None:
    """A request body must be a JSON object (400 `invalid_type` otherwise)."""
    if not isinstance(body, dict):
        raise ApiError(
            400,
            f"Invalid type for the request body: expected an object, but got {_article(_kind(body))} instead.",
            code="invalid_type",
        )


def decision(body: Any) -> str:
    """A `POST /approval/{thread}/decision` body, `{"decision": "approve" | "reject"}`: the decision."""
    _require_object(body)
    for key in body:
        if key != "decision":
            _unknown(key)
    if "decision" not in body:
        _missing("decision")
    return _enum("decision", body["decision"], DECISIONS)


# -- the run routes (a relay) ----------------------------------------------------------

AGENTS = ("chain", "agent", "approval")
_KEY = re.compile(r"[A-Za-z0-9_-]{1,200}")
_MAX_QUESTION = 4000


@dataclass(frozen=True)
class RunRequest:
    """A `POST /runs` body: which runnable, the question, and for `approval` its thread
    (and, to resume a paused thread, the person's decision)."""

    agent: str
    q: str = ""
    thread: str | None = None
    decision: str | None = None


def run_request(body: Any) -> RunRequest:
    """`{"agent": "chain" | "agent" | "approval", "q": str, "thread": str, "decision": "approve" | "reject"}`.

    `thread` is required for `approval` and refused otherwise; `decision` resumes that paused
    thread with `Command(resume=...)` (a new run, with its own key).
    """
    _require_object(body)
    for name in body:
        if name not in ("agent", "q", "thread", "decision"):
            _unknown(name)
    if "agent" not in body:
        _missing("agent")
    agent = _enum("agent", body["agent"], AGENTS)
    q = _string("q", body.get("q", ""))
    if len(q) > _MAX_QUESTION:
        raise ApiError(
            400,
            f"Invalid 'q': {len(q)} characters; at most {_MAX_QUESTION}.",
            param="q",
            code="string_above_max_length",
        )
    thread = decision_ = None
    if agent == "approval":
        thread = thread_id(body.get("thread"))
        if "decision" in body:
            decision_ = _enum("decision", body["decision"], DECISIONS)
    else:
        for name in ("thread", "decision"):
            if name in body:
                raise ApiError(
                    400,
                    f"Invalid '{name}': only the 'approval' agent takes a {name}.",
                    param=name,
                    code="invalid_value",
                )
    return RunRequest(agent, q, thread, decision_)


def run_key(value: str) -> str:
    """A run's key from a URL; anything that cannot be one is a 404, as an unknown key is
    (a 400 would tell a prober which strings are well formed)."""
    if not _KEY.fullmatch(value):
        raise ApiError(404, "No run with this key.", code="run_not_found")
    return value

"""Tests of sony_rag.message_codec at its public API: round trips, role rule, token usage, bad rows."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ChatMessageChunk,
    FunctionMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)

from sony_rag.errors import InvalidInputError, InvalidMetadataError, InvalidRoleError, InvalidTextError
from sony_rag.json_values import dumps_checked, loads_exact
from sony_rag.message_codec import EncodedMessage, decode_message, encode_message

BLOCKS: list[str | dict[str, Any]] = [
    {"type": "text", "text": "Look at "},
    "this ",
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    {"type": "image", "source_type": "url", "url": "https://example.com/tv.png"},
    {"type": "text", "text": "Bravia ✓ — テレビ"},
]
KWARGS: dict[str, Any] = {"nested": {"list": [1, 2.5, None, True, "ü"]}, "empty": {}}
RESPONSE_METADATA: dict[str, Any] = {"model_name": "gpt-x", "finish_reason": "stop", "logprobs": None}

RICH_MESSAGES: list[BaseMessage] = [
    HumanMessage("Which TV?", id="h-1", name="alice", additional_kwargs=KWARGS, response_metadata={"k": 1}),
    HumanMessage(BLOCKS, id="h-2"),
    HumanMessage(""),
    AIMessage(
        "Let me look that up.",
        id="run-1",
        name="shop-bot",
        additional_kwargs=KWARGS,
        response_metadata={**RESPONSE_METADATA, "token_usage": {"total_tokens": 99}},
        tool_calls=[{"name": "search", "args": {"q": "oled", "max": 3}, "id": "call-1", "type": "tool_call"}],
        invalid_tool_calls=[
            {
                "name": "lookup",
                "args": "{not json",
                "id": "call-2",
                "error": "bad JSON",
                "type": "invalid_tool_call",
            }
        ],
        usage_metadata={
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_token_details": {"cache_read": 2},
            "output_token_details": {"reasoning": 1},
        },
    ),
    AIMessage(
        [{"type": "reasoning", "reasoning": "think"}, {"type": "text", "text": "Answer"}],
        response_metadata={"output_version": "v1"},
    ),
    AIMessage(
        "",
        additional_kwargs={
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
            ]
        },
    ),
    SystemMessage("You are a helpful Sony assistant.", id="s-1", name="policy", additional_kwargs=KWARGS),
    SystemMessage(BLOCKS),
    ToolMessage(
        "3 results",
        tool_call_id="call-1",
        artifact={"rows": [{"sku": "XR-55", "price": 999.99}], "more": False},
        status="error",
        id="t-1",
        name="search",
        additional_kwargs=KWARGS,
        response_metadata={"latency_ms": 12},
    ),
    ToolMessage(BLOCKS, tool_call_id="call-9"),
    FunctionMessage(content='{"temp": 21}', name="weather", id="f-1", additional_kwargs=KWARGS),
    ChatMessage(
        content="Looks fine to me.", role="critic", id="c-1", name="reviewer", additional_kwargs=KWARGS
    ),
    ChatMessage(content=BLOCKS, role="user"),
    HumanMessageChunk(content="Which ", id="hc-1", name="alice", additional_kwargs=KWARGS),
    AIMessageChunk(
        content="Search",
        id="run-2",
        name="shop-bot",
        tool_call_chunks=[
            {"name": "search", "args": '{"q": "ol', "id": "call-3", "index": 0, "type": "tool_call_chunk"}
        ],
        usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
        response_metadata=RESPONSE_METADATA,
        chunk_position="last",
    ),
    AIMessageChunk(
        content="",
        tool_call_chunks=[
            {"name": "search", "args": '{"q": "oled"}', "id": "call-4", "index": 0, "type": "tool_call_chunk"}
        ],
    ),
    AIMessageChunk(content=BLOCKS, id="run-3"),
    SystemMessageChunk(content="Be ", id="sc-1", additional_kwargs=KWARGS),
    ToolMessageChunk(content="part", tool_call_id="call-5", artifact=[1, "two"], status="success", id="tc-1"),
    FunctionMessageChunk(content="{", name="weather", id="fc-1"),
    ChatMessageChunk(content="hm", role="moderator", id="cc-1", name="mod"),
]


def _round_trip(message: BaseMessage) -> tuple[EncodedMessage, BaseMessage]:
    encoded = encode_message(message)
    # The row goes through jsonb, so decode what JSON gives back rather than the encoder's own dict.
    stored = json.loads(json.dumps(encoded.metadata, allow_nan=False))
    return encoded, decode_message(encoded.role, encoded.content, stored)


def _id(message: BaseMessage) -> str:
    kind = "blocks" if isinstance(message.content, list) else "text"
    return f"{type(message).__name__}-{kind}-{message.id}"


@pytest.mark.parametrize("message", RICH_MESSAGES, ids=_id)
def test_round_trip_keeps_class_and_every_field(message: BaseMessage) -> None:
    _, decoded = _round_trip(message)
    assert type(decoded) is type(message)
    assert decoded == message
    assert decoded.model_dump() == message.model_dump()


def test_every_langchain_message_type_is_covered() -> None:
    covered = {type(message) for message in RICH_MESSAGES}
    assert covered == {
        HumanMessage,
        AIMessage,
        SystemMessage,
        ToolMessage,
        FunctionMessage,
        ChatMessage,
        HumanMessageChunk,
        AIMessageChunk,
        SystemMessageChunk,
        ToolMessageChunk,
        FunctionMessageChunk,
        ChatMessageChunk,
    }


def test_round_trip_keeps_tool_call_chunks_and_parsed_tool_calls() -> None:
    chunk = RICH_MESSAGES[[type(m) for m in RICH_MESSAGES].index(AIMessageChunk) + 1]
    assert isinstance(chunk, AIMessageChunk)
    _, decoded = _round_trip(chunk)
    assert isinstance(decoded, AIMessageChunk)
    assert decoded.tool_call_chunks == chunk.tool_call_chunks
    assert decoded.tool_calls == [
        {"name": "search", "args": {"q": "oled"}, "id": "call-4", "type": "tool_call"}
    ]


def _role_case_id(value: object) -> str:
    if isinstance(value, str):
        return value
    return f"{type(value).__name__}:{getattr(value, 'role', '')}"


@pytest.mark.parametrize(
    ("message", "role"),
    [
        (HumanMessage("x"), "user"),
        (HumanMessageChunk(content="x"), "user"),
        (AIMessage("x"), "assistant"),
        (AIMessageChunk(content="x"), "assistant"),
        (SystemMessage("x"), "system"),
        (SystemMessageChunk(content="x"), "system"),
        (ToolMessage("x", tool_call_id="c"), "assistant"),
        (ToolMessageChunk(content="x", tool_call_id="c"), "assistant"),
        (FunctionMessage(content="x", name="f"), "assistant"),
        (FunctionMessageChunk(content="x", name="f"), "assistant"),
        (ChatMessage(content="x", role="user"), "user"),
        (ChatMessage(content="x", role="human"), "user"),
        (ChatMessage(content="x", role=" Human "), "user"),
        (ChatMessage(content="x", role="assistant"), "assistant"),
        (ChatMessage(content="x", role="AI"), "assistant"),
        (ChatMessage(content="x", role="tool"), "assistant"),
        (ChatMessage(content="x", role="function"), "assistant"),
        (ChatMessage(content="x", role="system"), "system"),
        (ChatMessage(content="x", role="developer"), "system"),
        (ChatMessage(content="x", role="critic"), "user"),
        (ChatMessage(content="x", role=""), "user"),
        (ChatMessageChunk(content="x", role="ai"), "assistant"),
        (ChatMessageChunk(content="x", role="narrator"), "user"),
    ],
    ids=_role_case_id,
)
def test_role_rule(message: BaseMessage, role: str) -> None:
    encoded = encode_message(message)
    assert encoded.role == role
    # The column role is lossy for chat messages; the metadata must still restore the exact one.
    assert decode_message(encoded.role, encoded.content, encoded.metadata) == message


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (AIMessage("x", usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}), 7),
        (
            AIMessage(
                "x",
                usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
                response_metadata={"token_usage": {"total_tokens": 100}},
            ),
            7,
        ),
        (AIMessage("x", response_metadata={"token_usage": {"total_tokens": 42, "prompt_tokens": 40}}), 42),
        (
            AIMessageChunk(
                content="x", usage_metadata={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}
            ),
            2,
        ),
        (AIMessage("x", response_metadata={"token_usage": {"total_tokens": "42"}}), None),
        (AIMessage("x", response_metadata={"token_usage": {"total_tokens": 4.0}}), None),
        (AIMessage("x", response_metadata={"token_usage": {"total_tokens": True}}), None),
        (AIMessage("x", response_metadata={"token_usage": {"total_tokens": -1}}), None),
        (AIMessage("x", response_metadata={"token_usage": {"total_tokens": 2**31}}), None),
        (AIMessage("x", response_metadata={"token_usage": {"total_tokens": 2**31 - 1}}), 2**31 - 1),
        (AIMessage("x", response_metadata={"token_usage": 42}), None),
        (AIMessage("x", response_metadata={"token_usage": {}}), None),
        (AIMessage("x"), None),
        (HumanMessage("x"), None),
        (ToolMessage("x", tool_call_id="c", response_metadata={"token_usage": {"total_tokens": 5}}), 5),
    ],
)
def test_token_usage(message: BaseMessage, expected: int | None) -> None:
    encoded = encode_message(message)
    assert encoded.token_usage == expected
    assert type(encoded.token_usage) is type(expected)


def test_out_of_range_token_usage_is_still_in_metadata() -> None:
    message = AIMessage("x", response_metadata={"token_usage": {"total_tokens": 2**40}})
    encoded, decoded = _round_trip(message)
    assert encoded.token_usage is None
    assert decoded == message


def test_string_content_is_the_column_and_not_repeated_in_metadata() -> None:
    message = AIMessage("The XR-55 costs 999 €.", id="a-1")
    encoded = encode_message(message)
    assert encoded.content == "The XR-55 costs 999 €."
    assert encoded.metadata["lc"] == 1
    assert encoded.metadata["type"] == "ai"
    assert "content" not in encoded.metadata["data"]
    assert encoded.metadata["data"]["id"] == "a-1"
    assert "The XR-55" not in json.dumps(encoded.metadata, ensure_ascii=False)


def test_block_content_column_joins_text_and_metadata_keeps_exact_list() -> None:
    message = HumanMessage(BLOCKS)
    encoded = encode_message(message)
    assert encoded.content == "Look at this Bravia ✓ — テレビ"
    assert encoded.metadata["data"]["content"] == BLOCKS


def test_block_content_without_text_gives_empty_column() -> None:
    message = HumanMessage([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    encoded, decoded = _round_trip(message)
    assert encoded.content == ""
    assert decoded == message


def test_list_content_in_metadata_wins_over_column() -> None:
    encoded = encode_message(HumanMessage(BLOCKS))
    decoded = decode_message("user", "edited by hand", encoded.metadata)
    assert decoded.content == BLOCKS


@pytest.mark.parametrize("message", RICH_MESSAGES, ids=_id)
def test_metadata_is_strict_json_and_plain(message: BaseMessage) -> None:
    encoded = encode_message(message)
    text = json.dumps(encoded.metadata, allow_nan=False)
    assert json.loads(text) == encoded.metadata
    assert isinstance(encoded.content, str)
    assert encoded.role in {"user", "assistant", "system"}


def test_encoded_metadata_shares_nothing_with_the_message() -> None:
    message = AIMessage("x", additional_kwargs={"a": {"b": [1]}})
    encoded = encode_message(message)
    encoded.metadata["data"]["additional_kwargs"]["a"]["b"].append(2)
    assert message.additional_kwargs == {"a": {"b": [1]}}


def test_decoded_message_shares_nothing_with_the_metadata() -> None:
    metadata = encode_message(AIMessage("x", additional_kwargs={"a": {"b": [1]}})).metadata
    decoded = decode_message("assistant", "x", metadata)
    decoded.additional_kwargs["a"]["b"].append(2)
    assert metadata["data"]["additional_kwargs"] == {"a": {"b": [1]}}


@pytest.mark.parametrize(
    ("role", "cls"),
    [("user", HumanMessage), ("assistant", AIMessage), ("system", SystemMessage)],
)
@pytest.mark.parametrize("metadata", [None, {}, {"source": "csv import", "page": 3}])
def test_legacy_rows_decode_by_role(
    role: str, cls: type[BaseMessage], metadata: dict[str, Any] | None
) -> None:
    decoded = decode_message(role, "hello from elsewhere", metadata)
    assert type(decoded) is cls
    assert decoded == cls(content="hello from elsewhere")


@pytest.mark.parametrize("role", ["human", "ai", "tool", "User", "", None, 1])
def test_bad_role_is_refused(role: Any) -> None:
    with pytest.raises(InvalidRoleError):
        decode_message(role, "x", None)


def test_column_role_is_not_trusted_over_metadata() -> None:
    encoded = encode_message(SystemMessage("rules"))
    assert type(decode_message("user", encoded.content, encoded.metadata)) is SystemMessage


@pytest.mark.parametrize(
    "metadata",
    [
        {"lc": 2, "type": "human", "data": {}},
        {"lc": True, "type": "human", "data": {}},
        {"lc": 1, "type": "remove", "data": {}},
        {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", "HumanMessage"]},
        {"lc": 1, "data": {}},
        {"lc": 1, "type": "human", "data": []},
        {"lc": 1, "type": "tool", "data": {}},
        {"lc": 1, "type": "human", "data": {"type": "ai"}},
        {"lc": 1, "type": "ai", "data": {"tool_calls": "nope"}},
        ["not", "a", "mapping"],
    ],
)
def test_bad_metadata_is_refused(metadata: Any) -> None:
    with pytest.raises(InvalidMetadataError):
        decode_message("user", "x", metadata)


def test_remove_message_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="RemoveMessage"):
        encode_message(RemoveMessage(id="m-1"))


def test_subclass_is_refused_rather_than_decoded_as_its_parent() -> None:
    class LoudMessage(HumanMessage):
        pass

    with pytest.raises(InvalidInputError, match="LoudMessage"):
        encode_message(LoudMessage(content="HI"))


@pytest.mark.parametrize(
    "message",
    [
        ToolMessage("x", tool_call_id="c", artifact=object()),
        ToolMessage("x", tool_call_id="c", artifact=(1, 2)),
        ToolMessage("x", tool_call_id="c", artifact={1: "int key"}),
        ToolMessage("x", tool_call_id="c", artifact=b"bytes"),
        ToolMessage("x", tool_call_id="c", artifact={"s": {1, 2}}),
        AIMessage("x", additional_kwargs={"score": math.nan}),
        AIMessage("x", additional_kwargs={"score": math.inf}),
        AIMessage("x", additional_kwargs={"nul": "a\x00b"}),
        AIMessage(["a", {"type": "text", "text": "x"}, {"type": "image", "data": "\x00"}]),
    ],
)
def test_values_json_cannot_carry_back_are_refused(message: BaseMessage) -> None:
    with pytest.raises(InvalidMetadataError):
        encode_message(message)


@pytest.mark.parametrize("content", ["a\x00b", [{"type": "text", "text": "a\x00b"}]])
def test_nul_in_content_is_refused(content: Any) -> None:
    with pytest.raises(InvalidTextError):
        encode_message(HumanMessage(content))


def test_encoded_message_is_frozen() -> None:
    encoded = encode_message(HumanMessage("x"))
    with pytest.raises(AttributeError):
        encoded.role = "system"  # type: ignore[misc]


_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]))
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers()
    # Whole floats past 2**53 are refused by validation (jsonb would read them back as other integers).
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-(2.0**53), max_value=2.0**53)
    | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=12,
)
# Keys the message classes read specially would make this a test of LangChain's parsing, not of the codec.
_KWARG_KEYS = _TEXT.filter(lambda key: key not in {"tool_calls", "function_call"})


@settings(max_examples=300, deadline=None)
@given(
    cls=st.sampled_from([HumanMessage, AIMessage, SystemMessage]),
    content=_TEXT,
    additional_kwargs=st.dictionaries(_KWARG_KEYS, _JSON, max_size=5),
    name=st.none() | _TEXT,
    message_id=st.none() | _TEXT,
)
def test_round_trip_property(
    cls: type[BaseMessage],
    content: str,
    additional_kwargs: dict[str, Any],
    name: str | None,
    message_id: str | None,
) -> None:
    message = cls(content=content, additional_kwargs=additional_kwargs, name=name, id=message_id)
    encoded, decoded = _round_trip(message)
    assert encoded.content == content
    assert "content" not in encoded.metadata["data"]
    assert type(decoded) is cls
    assert decoded == message


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(
        _TEXT | st.builds(lambda text: {"type": "text", "text": text}, _TEXT) | st.just({"type": "image"}),
        max_size=6,
    )
)
def test_block_content_property(parts: list[str | dict[str, Any]]) -> None:
    message = AIMessage(content=parts)
    encoded, decoded = _round_trip(message)
    expected = "".join(part if isinstance(part, str) else part.get("text", "") for part in parts)
    assert encoded.content == expected
    assert decoded == message


# Values the project's JSON rule accepts and refuses alike: tuples, non-string keys, NaN, whole floats too large to
# read back, NUL characters, lone surrogates, integers beyond 64 bits, nesting near the depth limit.
_ANY_SCALAR = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=2**70)
               | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e300, 2.0**53, 2.0**60 + 0.5])
               | st.text(max_size=5) | st.sampled_from(["a\x00b", "\ud800", "ok"]))
_ANY_VALUE = st.recursive(
    _ANY_SCALAR,
    lambda children: (st.lists(children, max_size=3) | st.tuples(children)
                      | st.dictionaries(st.text(max_size=3) | st.integers(), children, max_size=3)),
    max_leaves=12,
)


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"d": value}
    return value


@settings(max_examples=400, deadline=None)
@given(value=_ANY_VALUE | st.sampled_from([_deep(40), _deep(70)]))
def test_metadata_is_kept_exactly_when_the_json_rule_accepts_it(value: Any) -> None:
    from sony_rag import validation

    message = AIMessage("x", additional_kwargs={"v": value})
    try:
        validation.metadata({"v": value})
        accepted = True
    except InvalidMetadataError:
        accepted = False
    if not accepted:
        with pytest.raises(InvalidMetadataError):
            encode_message(message)
        return
    encoded = encode_message(message)
    stored = encoded.metadata["data"]["additional_kwargs"]["v"]
    assert json.dumps(stored, allow_nan=False) == json.dumps(value, allow_nan=False)
    assert stored == json.loads(json.dumps(value))


@pytest.mark.parametrize("text", ["-9999999999999999999", "18446744073709551616", "9223372036854775808",
                                  '{"n": -9223372036854775809}', "1e400", '{"a": [1, 2.5, "x"]}',
                                  '{"a": 1, "b": [1.5, "x\\u00e9"], "c": null}',
                                  '{"big": 123456789012345678901234567890}',
                                  '{"neg": -98765432109876543210, "max": 9223372036854775807}', '{"f": 1e-07}',
                                  '{"f": 1e19, "g": -9.3e18}', '[1, [2, {"deep": [18446744073709551616]}]]',
                                  '{"id": "12345678901234567890123", "n": 3}'])
def test_metadata_json_reads_back_exactly_as_json_does(text: str) -> None:
    # orjson turns integers outside 64 bits into floats; the codec's reader must not.
    assert repr(loads_exact(text)) == repr(json.loads(text))


@settings(max_examples=400, deadline=None)
@given(value=_ANY_VALUE | st.sampled_from([_deep(40), {"f": 1e-07, "g": 1e16, "h": -0.0, "u": "é\u2028"}]))
def test_checked_json_is_written_as_json_writes_it(value: Any) -> None:
    # Values the JSON rule accepts are sent with orjson (dumps_checked): they must read back as json.dumps's do.
    from sony_rag import validation

    try:
        validation.metadata({"v": value})
    except InvalidMetadataError:
        return
    written = dumps_checked({"v": value})
    assert repr(loads_exact(written)) == repr(json.loads(json.dumps({"v": value})))

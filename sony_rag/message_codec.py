"""Lossless conversion between LangChain messages and ``chat_messages`` rows (pure: no database access).

A row has four columns the codec fills: ``role``, ``content``, ``token_usage`` and ``metadata``.

Role rule (the ``role`` column only allows ``user``, ``assistant`` and ``system``):

- ``HumanMessage``, ``HumanMessageChunk`` -> ``user``
- ``AIMessage``, ``AIMessageChunk`` -> ``assistant``
- ``SystemMessage``, ``SystemMessageChunk`` -> ``system``
- ``ToolMessage``, ``ToolMessageChunk``, ``FunctionMessage``, ``FunctionMessageChunk`` -> ``assistant``
- ``ChatMessage``, ``ChatMessageChunk`` -> decided by the message's own ``role`` (below)

Tool and function results count as ``assistant`` because the assistant asked for them: they are part of
its turn, not something the person typed. A chat message's own role is compared case-insensitively after
trimming spaces: ``user``/``human`` -> ``user``; ``assistant``/``ai``/``tool``/``function`` ->
``assistant``; ``system``/``developer`` -> ``system``; any other role -> ``user``, because a speaker
that is not the model is input to the model. The column is only a summary for SQL readers; decoding
ignores it whenever the metadata says more.

``content`` column: the message's text when its content is a string. When the content is a list of
content blocks, the column holds the text blocks (and bare strings) joined with no separator, so SQL
readers see something readable, and the exact list is kept in the metadata.

``token_usage`` column: ``usage_metadata["total_tokens"]`` of an AI message, else
``response_metadata["token_usage"]["total_tokens"]`` of any message, else ``NULL``. A value that is
not an integer from 0 to 2**31 - 1 (the ``INTEGER`` range) is skipped; it is still in the metadata.

``metadata`` layout, version 1::

    {"lc": 1, "type": <message.type>, "data": {<message.model_dump() without "type">}}

``type`` is LangChain's own type tag (``"human"``, ``"ai"``, ``"system"``, ``"tool"``, ``"function"``,
``"chat"``, ``"HumanMessageChunk"``, ``"AIMessageChunk"``, ... as produced by
``langchain_core.messages.message_to_dict``), so ``messages_from_dict`` rebuilds the exact class.
``data`` holds every field (id, name, additional_kwargs, response_metadata, tool_calls, artifact, ...)
except ``content`` when the content is a string (the column already has it); a list content is kept as
``data["content"]``. When ``data`` has ``content``, it wins over the column.

Rows written by other code (metadata ``NULL`` or without an ``"lc"`` key) decode by role alone:
``user`` -> ``HumanMessage``, ``assistant`` -> ``AIMessage``, ``system`` -> ``SystemMessage``, with the
column's content; such metadata is not copied into the message.

Refused with ``InvalidInputError`` (or a subclass): ``RemoveMessage`` (a deletion instruction, not a turn)
and subclasses of the classes above (they would come back as their parent class); content or fields with
NUL characters (``InvalidTextError`` / ``InvalidMetadataError``); fields that JSON cannot carry back equal,
such as tuples, sets, bytes, NaN or non-string keys in ``artifact`` or ``additional_kwargs``
(``InvalidMetadataError``), using the project-wide rule in ``sony_rag.validation.metadata``.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

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
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
    message_to_dict,
    messages_from_dict,
)

from sony_rag import validation
from sony_rag.errors import InvalidInputError, InvalidMetadataError
from sony_rag.types import Role

__all__ = ["CODEC_VERSION", "EncodedMessage", "decode_message", "encode_message"]


CODEC_VERSION: Final = 1

_INT4_MAX: Final = 2**31 - 1

_CLASSES: Final[dict[str, type[BaseMessage]]] = {
    "human": HumanMessage,
    "HumanMessageChunk": HumanMessageChunk,
    "ai": AIMessage,
    "AIMessageChunk": AIMessageChunk,
    "system": SystemMessage,
    "SystemMessageChunk": SystemMessageChunk,
    "tool": ToolMessage,
    "ToolMessageChunk": ToolMessageChunk,
    "function": FunctionMessage,
    "FunctionMessageChunk": FunctionMessageChunk,
    "chat": ChatMessage,
    "ChatMessageChunk": ChatMessageChunk,
}

# ChatMessage and its chunk are missing on purpose: their column role comes from their own ``role``.
_FIXED_ROLES: Final[dict[str, Role]] = {
    "human": "user",
    "HumanMessageChunk": "user",
    "ai": "assistant",
    "AIMessageChunk": "assistant",
    "system": "system",
    "SystemMessageChunk": "system",
    "tool": "assistant",
    "ToolMessageChunk": "assistant",
    "function": "assistant",
    "FunctionMessageChunk": "assistant",
}

_CHAT_ROLE_ALIASES: Final[dict[str, Role]] = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "tool": "assistant",
    "function": "assistant",
    "system": "system",
    "developer": "system",
}

_CLASS_BY_ROLE: Final[dict[str, type[BaseMessage]]] = {
    "user": HumanMessage,
    "assistant": AIMessage,
    "system": SystemMessage,
}


@dataclass(frozen=True, slots=True)
class EncodedMessage:
    """The column values of one ``chat_messages`` row."""

    role: Role
    content: str
    token_usage: int | None
    metadata: dict[str, Any]


def encode_message(message: BaseMessage) -> EncodedMessage:
    """Return the row values for ``message``; raises InvalidInputError (or a subclass) if it can't be kept."""
    # A subclass would come back as its langchain-core parent, so it is refused rather than silently changed.
    if type(message) is not _CLASSES.get(message.type):
        supported = ", ".join(sorted(cls.__name__ for cls in _CLASSES.values()))
        raise InvalidInputError(
            f"cannot store a {type(message).__name__} (type {message.type!r}): only these langchain-core "
            f"classes round-trip exactly: {supported}"
        )
    role = _chat_role(message.role) if isinstance(message, ChatMessage) else _FIXED_ROLES[message.type]

    data = message_to_dict(message)["data"]
    data.pop("type", None)  # the outer "type" already says it
    if isinstance(message.content, str):
        text = message.content
        del data["content"]
    else:
        text = _joined_text(message.content)
    validation.required_text(text, "content")
    return EncodedMessage(
        role=role,
        content=text,
        token_usage=_token_usage(message),
        metadata=_storable({"lc": CODEC_VERSION, "type": message.type, "data": data}),
    )


def decode_message(role: str, content: str, metadata: Mapping[str, Any] | None, *,
                   owned: bool = False) -> BaseMessage:
    """Return the message a row stands for; raises InvalidRoleError or InvalidMetadataError for a bad row.

    ``owned``: the caller hands ``metadata`` over (freshly read, used nowhere else), so it is not copied (the
    message may keep parts of it, and its ``data`` may gain the row's ``content``), and a row in this codec's
    layout is built straight from its fields (the checks below run only if that fails).
    """
    if owned and type(metadata) is dict:
        data = metadata.get("data")
        if (type(data) is dict and type(metadata.get("lc")) is int and metadata["lc"] == CODEC_VERSION
                and type(content) is str):
            type_ = metadata.get("type")
            message_class = _CLASSES.get(type_) if type(type_) is str else None
            if message_class is not None:
                # The row's own dict: its "content" is set in place rather than copied with it.
                added = "content" not in data
                if added:
                    data["content"] = content
                try:
                    return message_class(**data)
                except Exception:  # the checked path below says what is wrong with the row
                    if added:
                        del data["content"]
    role_class = _CLASS_BY_ROLE[validation.role(role)]
    validation.required_text(content, "content")
    if metadata is None:
        return role_class(content=content)
    if not isinstance(metadata, Mapping):
        raise InvalidMetadataError(f"metadata must be a JSON object or None, not {type(metadata).__name__}")
    if "lc" not in metadata:
        return role_class(content=content)

    version = metadata["lc"]
    if isinstance(version, bool) or version != CODEC_VERSION:
        raise InvalidMetadataError(f"unknown message metadata version {version!r} (known: {CODEC_VERSION})")
    type_ = metadata.get("type")
    if not isinstance(type_, str) or type_ not in _CLASSES:
        raise InvalidMetadataError(f"unknown message type {type_!r} in metadata")
    data = metadata.get("data", {})
    if not isinstance(data, Mapping) or not all(isinstance(key, str) for key in data):
        raise InvalidMetadataError("metadata 'data' must be a JSON object")

    # Deep copy so the message never shares mutable state with the caller's metadata. A freshly read row has
    # no other holder: copying it cost more than half of reading 50 messages.
    fields = dict(data) if owned else copy.deepcopy(dict(data))
    fields.setdefault("content", content)
    # Besides pydantic's ValidationError, LangChain's own "before" validators raise KeyError or
    # AttributeError on malformed fields, so any failure here means the stored data is bad.
    try:
        return messages_from_dict([{"type": type_, "data": fields}])[0]
    except Exception as error:
        raise InvalidMetadataError(f"metadata does not describe a valid {type_} message: {error}") from error


def _chat_role(role: str) -> Role:
    return _CHAT_ROLE_ALIASES.get(role.strip().lower(), "user")


def _joined_text(blocks: list[str | dict[Any, Any]]) -> str:
    # Same rule as ``BaseMessage.text`` in langchain-core 1.x, written out because it is a method in 0.3.
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "".join(parts)


def _token_usage(message: BaseMessage) -> int | None:
    candidates: list[object] = []
    if isinstance(message, AIMessage) and message.usage_metadata:
        candidates.append(message.usage_metadata.get("total_tokens"))
    usage = message.response_metadata.get("token_usage")
    if isinstance(usage, Mapping):
        candidates.append(usage.get("total_tokens"))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT4_MAX:
            return value
    return None


def _storable(metadata: dict[str, Any]) -> dict[str, Any]:
    # The project-wide rule decides what jsonb can hold and read back equal (no tuples, NaN, NUL, non-str
    # keys ...); a JSON round trip then gives a plain copy that shares nothing with the message.
    try:
        # Nearly every message holds only plain dicts, lists, clean strings, ints and small floats: copied
        # directly, each one of them is what the rule accepts and what the round trip would give, at a fifth
        # of the cost (the rule's checks and the round trip were two thirds of an append's client work).
        return _plain_copy(metadata, 0)  # type: ignore[no-any-return]
    except _NotPlain:
        pass
    validation.metadata(metadata)
    try:
        copied: dict[str, Any] = json.loads(json.dumps(metadata, allow_nan=False))
    except (TypeError, ValueError) as error:  # e.g. a Mapping that is not a dict
        raise InvalidMetadataError(f"message metadata is not JSON: {error}") from error
    return copied


class _NotPlain(Exception):
    """A value the fast copy leaves to the full rule (which accepts or refuses it with a clear message)."""


# Well inside the rule's depth limit, so nothing the fast copy accepts is refused by the rule.
_PLAIN_DEPTH: Final = 32
# Floats from here on may be whole numbers that jsonb reads back as integers: the rule decides those.
_PLAIN_FLOAT: Final = float(2**53)


def _plain_copy(value: Any, depth: int) -> Any:
    """Return a copy of ``value`` equal to its JSON round trip; raises _NotPlain for anything unusual."""
    kind = type(value)
    if kind is str:
        if "\x00" in value or not (value.isascii() or _encodable(value)):
            raise _NotPlain
        return value
    if value is None or kind is int or kind is bool:
        return value
    if kind is float:
        if math.isfinite(value) and -_PLAIN_FLOAT < value < _PLAIN_FLOAT:
            return value
        raise _NotPlain
    if depth >= _PLAIN_DEPTH:
        raise _NotPlain
    if kind is dict:
        copied = {}
        for key, item in value.items():
            if type(key) is not str or "\x00" in key or not (key.isascii() or _encodable(key)):
                raise _NotPlain
            copied[key] = _plain_copy(item, depth + 1)
        return copied
    if kind is list:
        return [_plain_copy(item, depth + 1) for item in value]
    raise _NotPlain


def _encodable(value: str) -> bool:
    # A lone surrogate is no UTF-8: Postgres could not store it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

"""Serializers for stored records, and the tagger for session values.

Values the application puts in ``flask.session`` are first *tagged* with
Flask's :class:`~flask.json.tag.TaggedJSONSerializer` machinery, which turns
tuple, bytes, Markup, UUID, datetime and nested dicts into plain JSON types.
A serializer then only has to encode plain JSON types, so every serializer
has the same type fidelity as Flask's cookie session. Nothing is ever pickled.
"""
from __future__ import annotations

import json
import typing as t

from flask.json.tag import TaggedJSONSerializer

from .errors import ConfigError, CorruptRecordError

#: The tagger shared by every manager: tag() and untag() are pure functions.
tagger = TaggedJSONSerializer()


class Serializer:
    """Encode plain JSON-compatible structures to bytes and back.

    :meth:`loads` raises :class:`~flask_gosession.errors.CorruptRecordError`
    for anything it cannot decode, never another exception.
    """

    name: t.ClassVar[str]

    def dumps(self, obj: t.Any) -> bytes:
        raise NotImplementedError

    def loads(self, data: bytes | str) -> t.Any:
        raise NotImplementedError


class JSONSerializer(Serializer):
    """Compact UTF-8 JSON from the standard library; the default."""

    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, check_circular=False
        )
        decoder = json.JSONDecoder()
        self._decode = decoder.decode
        self._scan = decoder.scan_once  # type: ignore[attr-defined]  # set in __init__, untyped

    def dumps(self, obj: t.Any) -> bytes:
        return self._encoder.encode(obj).encode()

    def loads(self, data: bytes | str) -> t.Any:
        try:
            if isinstance(data, bytes):
                data = data.decode()
            try:
                # The decoder's own scanner, without its two whitespace
                # checks: what dumps() wrote has no whitespace around it.
                obj, end = self._scan(data, 0)
            except StopIteration:
                end = -1
            if end != len(data):
                # Whitespace, extra data or an error: the full decoder decides.
                return self._decode(data)
            return obj
        except (ValueError, TypeError, RecursionError) as err:
            raise CorruptRecordError(f"undecodable JSON record: {err}") from err


class MsgpackSerializer(Serializer):
    """MessagePack through msgspec (``pip install flask-gosession[msgpack]``)."""

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgspec
        except ImportError as err:  # pragma: no cover - depends on the extra
            raise ConfigError(
                "GOSESSION_SERIALIZER='msgpack' needs msgspec: "
                "pip install flask-gosession[msgpack]"
            ) from err
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder().decode
        self._error = msgspec.DecodeError

    def dumps(self, obj: t.Any) -> bytes:
        return self._encode(obj)

    def loads(self, data: bytes | str) -> t.Any:
        try:
            if isinstance(data, str):
                data = data.encode("latin-1")
            return self._decode(data)
        except (self._error, ValueError, TypeError, UnicodeError, RecursionError) as err:
            raise CorruptRecordError(f"undecodable msgpack record: {err}") from err


SERIALIZERS: dict[str, type[Serializer]] = {
    "json": JSONSerializer,
    "msgpack": MsgpackSerializer,
}


def get_serializer(name: str) -> Serializer:
    """Build the serializer called ``name``.

    :raises ConfigError: for an unknown name.
    """
    try:
        cls = SERIALIZERS[name]
    except KeyError:
        raise ConfigError(
            f"GOSESSION_SERIALIZER={name!r} is not one of {sorted(SERIALIZERS)}"
        ) from None
    return cls()


_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})


def tag(value: t.Any) -> t.Any:
    """Turn a session value into plain JSON types (Flask's tagged form).

    Plain scalars, by far the most common values, skip the tagger.
    """
    if type(value) in _PLAIN_TYPES:
        return value
    return tagger.tag(value)


def untag(value: t.Any) -> t.Any:
    """Invert :func:`tag` on a decoded value, recursively.

    Hostile input can make this raise almost anything (a bad base64 tag,
    a bad date); the caller treats any exception as a corrupt record.
    """
    if isinstance(value, dict):
        return tagger.untag({k: untag(v) for k, v in value.items()})
    if isinstance(value, list):
        return [untag(item) for item in value]
    return value

"""Read the plain-data subset of a binary pickle, without the pickle module.

Flask-Session's file stores (``SESSION_TYPE = "filesystem"`` or
``"cachelib"`` with a :class:`cachelib.file.FileSystemCache`) hand the
session ``dict`` to cachelib, which pickles it (protocol 5 on Python 3.8+).
This module reads such a pickle when, and only when, it holds nothing but
plain data: ``dict``, ``list``, ``tuple``, ``str``, ``bytes``, ``int``,
``float``, ``bool`` and ``None``.

It is a stack machine over a fixed set of opcodes (protocols 2 to 5) that
build those types and nothing else. Any opcode that names, calls or
builds an object of some class (``GLOBAL``, ``STACK_GLOBAL``, ``REDUCE``,
``BUILD``, ``NEWOBJ``, ``INST``, ``OBJ``, ``EXT*``, persistent ids,
buffers), every text-protocol opcode, and every opcode outside the set is
refused with :class:`NotPlain`, so no code of the record's choosing can
ever run. A record holding a ``datetime``, a ``Markup`` or any other class
is therefore refused too. Malformed input raises :class:`Malformed`.

Bounds: the input is capped by the caller; integers are at most
:data:`MAX_LONG_BYTES` long; the reader never recurses (the caller bounds
how deep the result nests); the memo only ever yields immutable scalars, so
no container can be made to contain itself (``pickle`` would build such
cycles; this reader never does).
"""
from __future__ import annotations

import struct
import typing as t

#: The longest integer (``LONG1``/``LONG4``) accepted, in bytes.
MAX_LONG_BYTES = 64
#: The most bytes of strings and bytes the result may hold, counting every
#: memo fetch again (a 2-byte ``BINGET`` repeats a string without its
#: bytes: a small record must not decode, then serialize, into gigabytes).
MAX_EXPANDED = 4 * 1024 * 1024


class Malformed(ValueError):
    """Not a well-formed pickle of plain data (truncated, bad stack, ...)."""


class NotPlain(ValueError):
    """A well-formed start of a pickle that uses an opcode outside the plain-data set."""


class _Mark:
    """The ``MARK`` sentinel on the stack."""


_MARK = _Mark()
_SCALARS = (str, bytes, int, float, bool, type(None))

# Opcodes with a length-prefixed payload: opcode -> (length format, kind).
_SIZED: dict[int, tuple[str, str]] = {
    0x8C: ("<B", "str"),    # SHORT_BINUNICODE
    0x58: ("<I", "str"),    # BINUNICODE
    0x8D: ("<Q", "str"),    # BINUNICODE8
    0x43: ("<B", "bytes"),  # SHORT_BINBYTES
    0x42: ("<I", "bytes"),  # BINBYTES
    0x8E: ("<Q", "bytes"),  # BINBYTES8
    0x8A: ("<B", "long"),   # LONG1
    0x8B: ("<I", "long"),   # LONG4
}
# Opcodes with a fixed-size argument: opcode -> struct format.
_FIXED: dict[int, str] = {
    0x80: "<B",   # PROTO
    0x95: "<Q",   # FRAME
    0x4A: "<i",   # BININT
    0x4B: "<B",   # BININT1
    0x4D: "<H",   # BININT2
    0x47: ">d",   # BINFLOAT
    0x71: "<B",   # BINPUT
    0x72: "<I",   # LONG_BINPUT
    0x68: "<B",   # BINGET
    0x6A: "<I",   # LONG_BINGET
}
_CONSTANTS: dict[int, t.Any] = {0x4E: None, 0x88: True, 0x89: False}  # NONE, NEWTRUE, NEWFALSE
_EMPTY = {0x7D: dict, 0x5D: list, 0x29: tuple}  # EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE
_TUPLE_N = {0x85: 1, 0x86: 2, 0x87: 3}  # TUPLE1, TUPLE2, TUPLE3
_STOP, _MARK_OP, _MEMOIZE = 0x2E, 0x28, 0x94
_SETITEM, _SETITEMS, _APPEND, _APPENDS, _TUPLE = 0x73, 0x75, 0x61, 0x65, 0x74


def loads_plain(data: bytes) -> t.Any:
    """The value a binary pickle of plain data encodes.

    :raises NotPlain: for any opcode outside the plain-data set.
    :raises Malformed: for input that is not a whole, well-formed pickle.
    """
    reader = _Reader(data)
    return reader.run()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.stack: list[t.Any] = []
        self.memo: dict[int, t.Any] = {}
        self.expanded = 0

    def grow(self, size: int) -> None:
        """Count ``size`` more bytes of strings into the result."""
        self.expanded += size
        if self.expanded > MAX_EXPANDED:
            raise Malformed("the record expands past its size limit")

    def take(self, size: int) -> memoryview:
        end = self.pos + size
        if size < 0 or end > len(self.data):
            raise Malformed("truncated pickle")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def unpack(self, fmt: str) -> t.Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def pop(self) -> t.Any:
        if not self.stack or self.stack[-1] is _MARK:
            raise Malformed("stack underflow")
        return self.stack.pop()

    def pop_mark(self) -> list[t.Any]:
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index] is _MARK:
                items = self.stack[index + 1:]
                del self.stack[index:]
                return items
        raise Malformed("no mark on the stack")

    def top(self, kind: type) -> t.Any:
        if not self.stack or not isinstance(self.stack[-1], kind):
            raise Malformed(f"expected a {kind.__name__} on the stack")
        return self.stack[-1]

    def run(self) -> t.Any:
        if self.take(1)[0] != 0x80 or not 2 <= self.unpack("<B") <= 5:
            raise NotPlain("not a binary pickle of protocol 2 to 5")
        while True:
            op = self.take(1)[0]
            if op == _STOP:
                if self.pos != len(self.data) or len(self.stack) != 1:
                    raise Malformed("pickle does not end after its value")
                return self.pop()
            self.step(op)

    def step(self, op: int) -> None:
        stack = self.stack
        if op in _SIZED:
            length_format, kind = _SIZED[op]
            size = self.unpack(length_format)
            if kind == "long" and size > MAX_LONG_BYTES:
                raise Malformed("integer too long")
            raw = bytes(self.take(size))
            self.grow(size)
            if kind == "str":
                try:
                    stack.append(raw.decode("utf-8", "surrogatepass"))
                except UnicodeDecodeError as err:
                    raise Malformed("bad UTF-8 in a string") from err
            elif kind == "bytes":
                stack.append(raw)
            else:
                stack.append(int.from_bytes(raw, "little", signed=True))
        elif op in _FIXED:
            self.fixed(op, self.unpack(_FIXED[op]))
        elif op in _CONSTANTS:
            stack.append(_CONSTANTS[op])
        elif op in _EMPTY:
            stack.append(_EMPTY[op]())
        elif op == _MARK_OP:
            stack.append(_MARK)
        elif op == _MEMOIZE:
            self.put(len(self.memo))
        elif op in _TUPLE_N:
            items = [self.pop() for _ in range(_TUPLE_N[op])]
            stack.append(tuple(reversed(items)))
        elif op == _TUPLE:
            stack.append(tuple(self.pop_mark()))
        elif op in (_APPEND, _APPENDS):
            items = [self.pop()] if op == _APPEND else self.pop_mark()
            self.top(list).extend(items)
        elif op in (_SETITEM, _SETITEMS):
            items = self.pop_mark() if op == _SETITEMS else [*reversed([self.pop(), self.pop()])]
            if len(items) % 2:
                raise Malformed("odd number of items for a dict")
            target = self.top(dict)
            try:
                for index in range(0, len(items), 2):
                    target[items[index]] = items[index + 1]
            except TypeError as err:  # an unhashable key
                raise Malformed("unhashable dict key") from err
        else:
            raise NotPlain(f"pickle opcode 0x{op:02x} is outside the plain-data set")

    def fixed(self, op: int, arg: t.Any) -> None:
        if op in (0x80, 0x95):  # PROTO again, FRAME: framing only
            return
        if op in (0x71, 0x72):
            self.put(arg)
        elif op in (0x68, 0x6A):
            value = self.memo.get(arg, _MARK)
            if value is _MARK:
                raise Malformed("memo key missing, or names a container")
            self.grow(len(value) if isinstance(value, (str, bytes)) else MAX_LONG_BYTES)
            self.stack.append(value)
        else:
            self.stack.append(arg)

    def put(self, index: int) -> None:
        """Memoize the top of the stack; only scalars are ever fetched back."""
        value = self.stack[-1] if self.stack else _MARK
        if value is _MARK:
            raise Malformed("nothing to memoize")
        # A container is kept as a placeholder (MEMOIZE numbers entries by
        # the memo's size) that a later GET refuses.
        self.memo[index] = value if isinstance(value, _SCALARS) else _MARK


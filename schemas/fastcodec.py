"""Avro binary encoders and decoders generated per schema: the hot path.

fastavro interprets the schema for every datum (dictionary look-ups per
field): on the reference machine a 32-field RawEvent took ~25-45 µs each way,
far from the 100k events/s a core should sustain. This module turns a record
schema into straight-line Python once (``compile_decoder``,
``compile_encoder``), a few statements per field, which measured 2-3x faster
(bench/bench_codecs.py prints both).

It supports the types eventsieve's schemas use: null, boolean, int, long,
float, double, string, bytes, records, arrays, maps and unions (any branches,
so that ``["null", T]`` is cheap), with records defined inline. Anything else
(enums, fixed, references to a named type by its name) raises
``NotImplementedError`` or ``KeyError`` at compile time, so an unsupported
schema fails when the codec is built, never on a record.

Schema resolution between versions is not done here: the codec module
resolves simple cases itself and falls back to fastavro for the rest. Unit
tests check that the bytes are identical to fastavro's, both ways.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Protocol

from schemas.errors import EncodeError, MalformedAvroError, TruncatedError

Decoder = Callable[[bytes, int], tuple[dict[str, Any], int]]
"""``(buffer, start) -> (record, end)``."""


class Encoder(Protocol):
    """``(record, prefix=b"") -> prefix + the record's Avro binary``."""

    def __call__(self, record: Any, prefix: bytes = b"") -> bytes: ...


_MAX_LONG = 2**63


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint long at ``pos``: ``(value, next position)``."""
    b = buf[pos]
    n = b & 0x7F
    shift = 7
    pos += 1
    while b > 0x7F:
        if shift >= 70:
            raise MalformedAvroError("varint longer than 10 bytes")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def read_length(buf: bytes, pos: int) -> tuple[int, int]:
    """A string/bytes length at ``pos``; a negative length is malformed input."""
    n, pos = read_long(buf, pos)
    if n < 0:
        raise MalformedAvroError(f"negative length {n}")
    return n, pos


LEN1 = tuple(b >> 1 if b < 128 and not b & 1 else -1 for b in range(256))


def long_bytes(value: int) -> bytes:
    """The zig-zag varint encoding of a long."""
    if type(value) is not int and not isinstance(value, int):
        raise EncodeError(f"expected an int, got {type(value).__name__}")
    if not -_MAX_LONG <= value < _MAX_LONG:
        raise EncodeError(f"{value} does not fit in a 64-bit long")
    n = (value << 1) ^ (value >> 63)
    return _VARINT[n.bit_length()](n)


def _varint_of_width(size: int) -> Callable[[int], bytes]:
    """The encoder of varints of ``size`` bytes: one expression, no loop (a timestamp
    takes 6 bytes, and a loop of appends costs several times as much)."""
    groups = [f"n >> {7 * i} & 127 | 128" for i in range(size - 1)] + [f"n >> {7 * (size - 1)}"]
    function: Callable[[int], bytes] = eval(f"lambda n: bytes(({', '.join(groups)},))")
    return function


# By bit length of the zig-zag value (0..64): the encoder of its varint width.
_VARINT = tuple(_varint_of_width(max(1, (bits + 6) // 7)) for bits in range(65))


_SMALL = tuple(long_bytes(i) for i in range(64))  # one-byte encodings of 0..63
# A union's branch index (0..7) and a length of 0..63, as the two bytes they are.
_SMALL_AFTER = tuple(tuple(_SMALL[b] + _SMALL[n] for n in range(64)) for b in range(8))

_STRUCT_F = struct.Struct("<f")
_STRUCT_D = struct.Struct("<d")


class _Gen:
    """Accumulates generated source lines with indentation and unique names."""

    def __init__(self, canonical: bool = False) -> None:
        self.counter = 0
        self.functions: list[str] = []
        # Marking decoders note in a local ``canon`` whether the input is exactly
        # what the encoder writes (shortest varints, one block per map or array,
        # no repeated map key): only such bytes can be copied into an output.
        self.canonical = canonical

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"


def _type_name(avro_type: Any) -> str:
    name: str
    if isinstance(avro_type, dict):
        name = avro_type["type"]
    elif isinstance(avro_type, list):
        name = "union"
    else:
        name = avro_type
    return name


# --- decoding ---------------------------------------------------------------------------


def _dec_long(lines: list[str], ind: str, target: str, canonical: bool = False) -> None:
    # ``read_long`` inlined: a timestamp is a varint of 6 bytes, and a call per
    # long cost more than its loop.
    lines += [
        f"{ind}b = buf[pos]",
        f"{ind}if b < 128:",
        f"{ind}    {target} = (b >> 1) ^ -(b & 1)",
        f"{ind}    pos += 1",
        f"{ind}else:",
        f"{ind}    n = b & 127",
        f"{ind}    shift = 7",
        f"{ind}    pos += 1",
        f"{ind}    b = buf[pos]",
        f"{ind}    while b > 127:",
        f"{ind}        n |= (b & 127) << shift",
        f"{ind}        shift += 7",
        f"{ind}        if shift >= 70:",
        f"{ind}            raise MalformedAvroError('varint longer than 10 bytes')",
        f"{ind}        pos += 1",
        f"{ind}        b = buf[pos]",
        f"{ind}    n |= b << shift",
        f"{ind}    pos += 1",
        f"{ind}    {target} = (n >> 1) ^ -(n & 1)",
    ]
    if canonical:
        # A varint of several bytes is the shortest one unless its last byte is 0.
        lines += [f"{ind}    if not b:", f"{ind}        canon = False"]


def _dec_value(gen: _Gen, avro_type: Any, lines: list[str], ind: str, target: str) -> None:
    kind = _type_name(avro_type)
    if isinstance(avro_type, dict) and kind in ("string", "bytes", "int", "long", "boolean"):
        kind = avro_type["type"]  # e.g. {"type": "long", "logicalType": ...}: plain value
    if kind == "null":
        lines.append(f"{ind}{target} = None")
    elif kind == "boolean":
        lines += [
            f"{ind}b = buf[pos]",
            f"{ind}pos += 1",
            f"{ind}if b > 1:",
            f"{ind}    raise MalformedAvroError(f'invalid boolean byte {{b}}')",
            f"{ind}{target} = b == 1",
        ]
    elif kind in ("int", "long"):
        _dec_long(lines, ind, target, gen.canonical)
    elif kind == "float":
        lines += [f"{ind}{target} = unpack_f(buf, pos)[0]", f"{ind}pos += 4"]
    elif kind == "double":
        lines += [f"{ind}{target} = unpack_d(buf, pos)[0]", f"{ind}pos += 8"]
    elif kind in ("string", "bytes"):
        # LEN1 maps a one-byte varint to a non-negative length, else -1 (slow path).
        lines += [
            f"{ind}n = LEN1[buf[pos]]",
            f"{ind}if n >= 0:",
            f"{ind}    pos += 1",
            # Two bytes (a user agent, a URL): not negative (LEN1 refused an even
            # byte only for its continuation bit), and in the shortest form.
            f"{ind}elif not buf[pos] & 1 and 0 < buf[pos + 1] < 128:",
            f"{ind}    n = ((buf[pos] & 127) | (buf[pos + 1] << 7)) >> 1",
            f"{ind}    pos += 2",
            f"{ind}else:",
            f"{ind}    n, pos = read_length(buf, pos)",
            *([f"{ind}    if not buf[pos - 1]:", f"{ind}        canon = False"] * gen.canonical),
            f"{ind}end = pos + n",
            f"{ind}{target} = buf[pos:end]{'.decode()' if kind == 'string' else ''}",
            f"{ind}pos = end",
        ]
    elif kind == "union" and len(avro_type) == 2 and avro_type[0] == "null":
        # ["null", T], the optional field: test the common null case first.
        lines += [
            f"{ind}if not buf[pos]:",
            f"{ind}    pos += 1",
            f"{ind}    {target} = None",
            f"{ind}elif buf[pos] == 2:",
            f"{ind}    pos += 1",
        ]
        _dec_value(gen, avro_type[1], lines, ind + "    ", target)
        lines += [
            f"{ind}else:",
            f"{ind}    raise MalformedAvroError(f'union index byte {{buf[pos]}} out of range')",
        ]
    elif kind == "union":
        lines.append(f"{ind}b = buf[pos]")
        for index, branch in enumerate(avro_type):
            keyword = "if" if index == 0 else "elif"
            lines += [f"{ind}{keyword} b == {index * 2}:", f"{ind}    pos += 1"]
            _dec_value(gen, branch, lines, ind + "    ", target)
        lines += [
            f"{ind}else:",
            f"{ind}    raise MalformedAvroError(f'union index byte {{b}} out of range')",
        ]
    elif kind in ("array", "map"):
        _dec_collection(gen, avro_type, lines, ind, target)
    elif kind == "record":
        if gen.canonical:
            raise NotImplementedError("a marking decoder does not support nested records")
        func = _dec_record_function(gen, avro_type)
        lines.append(f"{ind}{target}, pos = {func}(buf, pos)")
    else:
        raise NotImplementedError(f"generated codec does not support Avro type {avro_type!r}")


def _dec_collection(gen: _Gen, avro_type: Any, lines: list[str], ind: str, target: str) -> None:
    """An array or a map: blocks of items, each led by its count, until a count of 0."""
    kind = avro_type["type"]
    items = avro_type["items"] if kind == "array" else avro_type["values"]
    acc = gen.name("c")
    count = gen.name("k")
    item = gen.name("v")
    blocks = gen.name("nb")
    total = gen.name("t")
    lines += [f"{ind}{acc} = {'[]' if kind == 'array' else '{}'}"]
    if gen.canonical:
        lines.append(f"{ind}{blocks} = {total} = 0")
    lines.append(f"{ind}while True:")
    inner = ind + "    "
    _dec_long(lines, inner, count, gen.canonical)
    lines += [
        f"{inner}if {count} == 0:",
        f"{inner}    break",
        f"{inner}if {count} < 0:",
        f"{inner}    {count} = -{count}",
        f"{inner}    _size, pos = read_long(buf, pos)",
    ]
    if gen.canonical:
        lines += [
            f"{inner}    canon = False",  # a block with its byte size: not the encoder's form
            f"{inner}{blocks} += 1",
            f"{inner}{total} = {count}",
        ]
    lines += [
        # Every item takes at least one byte (arrays of null aside): a larger
        # count is corrupt input, refused before it spins through a huge loop.
        f"{inner}if {count} > len(buf):",
        f"{inner}    raise MalformedAvroError(f'block of {{{count}}} items, value too short')",
        f"{inner}for _ in range({count}):",
    ]
    body = inner + "    "
    if kind == "map":
        key = gen.name("s")
        _dec_value(gen, "string", lines, body, key)
        _dec_value(gen, items, lines, body, item)
        lines.append(f"{body}{acc}[{key}] = {item}")
    else:
        _dec_value(gen, items, lines, body, item)
        lines.append(f"{body}{acc}.append({item})")
    if gen.canonical:
        # One block, and (maps) as many keys as items: a repeated key is lost.
        lines += [f"{ind}if {blocks} > 1:", f"{ind}    canon = False"]
        if kind == "map":
            lines += [f"{ind}elif {blocks} and len({acc}) != {total}:", f"{ind}    canon = False"]
    lines.append(f"{ind}{target} = {acc}")


def _dec_record_function(
    gen: _Gen, schema: dict[str, Any], marks: tuple[str, ...] | None = None
) -> str:
    """A record reader; with ``marks``, it also returns where those fields start,
    or None for the positions when the input is not canonical (``_Gen``)."""
    func = gen.name("_read_record")
    lines = [f"def {func}(buf, pos):"]
    if marks is not None:
        lines.append("    canon = True")
    names = []
    for index, field in enumerate(schema["fields"]):
        var = f"f{index}"
        names.append((field["name"], var))
        if marks is not None and field["name"] in marks:
            lines.append(f"    m{marks.index(field['name'])} = pos")
        _dec_value(gen, field["type"], lines, "    ", var)
    items = ", ".join(f"{name!r}: {var}" for name, var in names)
    if marks is None:
        lines.append(f"    return {{{items}}}, pos")
    else:
        found = "".join(f"m{i}, " for i in range(len(marks)))
        lines.append(f"    return {{{items}}}, pos, ({found}pos) if canon else None")
    gen.functions.append("\n".join(lines))
    return func


def _decoder_namespace() -> dict[str, Any]:
    return {
        "read_long": read_long,
        "read_length": read_length,
        "LEN1": LEN1,
        "MalformedAvroError": MalformedAvroError,
        "unpack_f": _STRUCT_F.unpack_from,
        "unpack_d": _STRUCT_D.unpack_from,
    }


def compile_decoder(schema: dict[str, Any]) -> Decoder:
    """A decoder of ``schema``'s binary encoding (a record schema as JSON data).

    The returned function raises ``MalformedAvroError``/``TruncatedError``
    for invalid input; callers check that ``end`` is the buffer's length.
    """
    gen = _Gen()
    entry = _dec_record_function(gen, schema)
    namespace = _decoder_namespace()
    exec(compile("\n\n".join(gen.functions), f"<avro decoder {schema['name']}>", "exec"), namespace)
    inner = namespace[entry]

    name = schema["name"]

    def decode(buf: bytes, pos: int = 0) -> tuple[dict[str, Any], int]:
        try:
            record, end = inner(buf, pos)
        except _READ_ERRORS as exc:
            raise _read_error(name, exc) from None
        if end > len(buf):
            raise TruncatedError(f"{name}: value ends inside the record")
        return record, end

    return decode


_READ_ERRORS = (IndexError, UnicodeDecodeError, struct.error)
"""What a generated decoder raises on a value that is cut short or not UTF-8."""


def _read_error(name: str, exc: Exception) -> Exception:
    """One of ``_READ_ERRORS`` as the typed error the codecs promise."""
    if isinstance(exc, UnicodeDecodeError):
        return MalformedAvroError(f"{name}: string is not UTF-8 ({exc})")
    return TruncatedError(f"{name}: value ends inside the record")


Marks = tuple[int, ...]
"""Where the marked fields of a decoded record start in its buffer, then where it ends."""
MarkingDecoder = Callable[[bytes, int], tuple[dict[str, Any], int, Marks | None]]
"""``(buffer, start) -> (record, end, marks or None)``."""


def compile_marking_decoder(schema: dict[str, Any], marks: tuple[str, ...]) -> MarkingDecoder:
    """A decoder like ``compile_decoder``'s that also says where fields ``marks`` start.

    The positions come back (the end of the record last) only when the input
    is canonical, the exact bytes this module's encoder writes for the
    decoded values, so that a field's bytes can be copied into another
    record's encoding unchanged (``schemas.codecs.Splice``); otherwise None.
    Records nested in the schema are not supported (``NotImplementedError``).
    """
    unknown = set(marks) - {f["name"] for f in schema["fields"]}
    if unknown:
        raise KeyError(f"no field(s) {sorted(unknown)} in {schema['name']}")
    gen = _Gen(canonical=True)
    entry = _dec_record_function(gen, schema, marks)
    namespace = _decoder_namespace()
    source = "\n\n".join(gen.functions)
    exec(compile(source, f"<avro marking decoder {schema['name']}>", "exec"), namespace)
    inner = namespace[entry]

    name = schema["name"]

    def decode(buf: bytes, pos: int = 0) -> tuple[dict[str, Any], int, Marks | None]:
        try:
            record, end, found = inner(buf, pos)
        except _READ_ERRORS as exc:
            raise _read_error(name, exc) from None
        if end > len(buf):
            raise TruncatedError(f"{name}: value ends inside the record")
        return record, end, found

    return decode


# --- encoding ---------------------------------------------------------------------------


def _enc_long(lines: list[str], ind: str, expr: str) -> None:
    lines += [
        f"{ind}if type({expr}) is int and 0 <= {expr} < 64:",
        f"{ind}    out(SMALL[{expr}])",
        f"{ind}else:",
        f"{ind}    out(long_bytes({expr}))",
    ]


def _enc_value(gen: _Gen, avro_type: Any, lines: list[str], ind: str, expr: str) -> None:
    kind = _type_name(avro_type)
    if isinstance(avro_type, dict) and kind in ("string", "bytes", "int", "long", "boolean"):
        kind = avro_type["type"]
    if kind == "null":
        lines += [
            f"{ind}if {expr} is not None:",
            f"{ind}    raise EncodeError(f'expected null, got {{type({expr}).__name__}}')",
        ]
    elif kind == "boolean":
        lines += [
            f"{ind}if {expr} is True:",
            f"{ind}    out(b'\\x01')",
            f"{ind}elif {expr} is False:",
            f"{ind}    out(b'\\x00')",
            f"{ind}else:",
            f"{ind}    raise EncodeError(f'expected a boolean, got {{type({expr}).__name__}}')",
        ]
    elif kind in ("int", "long"):
        _enc_long(lines, ind, expr)
    elif kind == "float":
        lines.append(f"{ind}out(pack_f({expr}))")
    elif kind == "double":
        lines.append(f"{ind}out(pack_d({expr}))")
    elif kind == "string":
        data = gen.name("e")
        lines += [f"{ind}{data} = {expr}.encode()"]
        _enc_len(lines, ind, data)
    elif kind == "bytes":
        data = gen.name("e")
        lines += [f"{ind}{data} = bytes({expr})"]
        _enc_len(lines, ind, data)
    elif kind == "union":
        _enc_union(gen, avro_type, lines, ind, expr)
    elif kind in ("array", "map"):
        items = avro_type["items"] if kind == "array" else avro_type["values"]
        item = gen.name("v")
        lines += [f"{ind}if {expr}:"]
        inner = ind + "    "
        _enc_long(lines, inner, f"len({expr})")
        if kind == "map":
            key = gen.name("s")
            lines.append(f"{inner}for {key}, {item} in {expr}.items():")
            _enc_value(gen, "string", lines, inner + "    ", key)
        else:
            lines.append(f"{inner}for {item} in {expr}:")
        _enc_value(gen, items, lines, inner + "    ", item)
        lines.append(f"{ind}out(b'\\x00')")
    elif kind == "record":
        func = _enc_record_function(gen, avro_type)
        lines.append(f"{ind}{func}({expr}, out)")
    else:
        raise NotImplementedError(f"generated codec does not support Avro type {avro_type!r}")


def _enc_len(lines: list[str], ind: str, data: str, branch: int = -1) -> None:
    """The length of ``data`` and ``data``; with ``branch``, the union index first,
    written with the length as one piece (``SMALL_AFTER``)."""
    size = f"n{data}"
    if branch < 0:
        lines += [
            f"{ind}{size} = len({data})",
            f"{ind}out(SMALL[{size}] if {size} < 64 else long_bytes({size}))",
        ]
    else:
        lines += [
            f"{ind}{size} = len({data})",
            f"{ind}if {size} < 64:",
            f"{ind}    out(SMALL_AFTER[{branch}][{size}])",
            f"{ind}else:",
            f"{ind}    out({long_bytes(branch)!r} + long_bytes({size}))",
        ]
    lines.append(f"{ind}out({data})")


_PY_CHECK = {
    "null": "{x} is None",
    "boolean": "type({x}) is bool",
    "int": "type({x}) is int",
    "long": "type({x}) is int",
    "float": "isinstance({x}, (int, float)) and type({x}) is not bool",
    "double": "isinstance({x}, (int, float)) and type({x}) is not bool",
    "string": "type({x}) is str",
    "bytes": "isinstance({x}, (bytes, bytearray, memoryview))",
    "array": "isinstance({x}, (list, tuple))",
    "map": "isinstance({x}, dict)",
    "record": "isinstance({x}, dict)",
}


def _enc_union(gen: _Gen, branches: list[Any], lines: list[str], ind: str, expr: str) -> None:
    for index, branch in enumerate(branches):
        kind = _type_name(branch)
        if isinstance(branch, dict) and kind not in ("array", "map", "record"):
            kind = branch["type"]
        keyword = "if" if index == 0 else "elif"
        lines.append(f"{ind}{keyword} {_PY_CHECK[kind].format(x=expr)}:")
        if kind == "string" and index < len(_SMALL_AFTER):
            # The common optional string: branch index and length in one piece.
            data = gen.name("e")
            lines.append(f"{ind}    {data} = {expr}.encode()")
            _enc_len(lines, ind + "    ", data, index)
            continue
        lines.append(f"{ind}    out({long_bytes(index)!r})")
        if kind != "null":
            _enc_value(gen, branch, lines, ind + "    ", expr)
    lines += [
        f"{ind}else:",
        f"{ind}    raise EncodeError(f'{{type({expr}).__name__}} matches no branch of the union')",
    ]


def _enc_record_function(gen: _Gen, schema: dict[str, Any]) -> str:
    func = gen.name("_write_record")
    lines = [f"def {func}(rec, out):"]
    for index, field in enumerate(schema["fields"]):
        var = f"f{index}"
        name = field["name"]
        if "default" in field:
            const = gen.name("D")
            gen.functions.insert(0, f"{const} = {_literal(field['default'])}")
            lines.append(f"    {var} = rec.get({name!r}, {const})")
        else:
            lines += [
                "    try:",
                f"        {var} = rec[{name!r}]",
                "    except KeyError:",
                f"        raise EncodeError({f'missing required field {name!r}'!r}) from None",
            ]
        lines.append("    try:")
        _enc_value(gen, field["type"], lines, "        ", var)
        lines += [
            "    except EncodeError as exc:",
            f"        raise EncodeError({f'field {name!r}: '!r} + str(exc)) from None",
            "    except (AttributeError, TypeError, ValueError, OverflowError) as exc:",
            f"        raise EncodeError({f'field {name!r}: '!r} + describe(exc)) from None",
        ]
    gen.functions.append("\n".join(lines))
    return func


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _literal(value: Any) -> str:
    # Defaults are JSON values; maps/lists are only read (encoding never mutates them).
    return repr(value)


Writer = Callable[[Any, Callable[[bytes], None]], None]
"""``(record, out)``: writes the record's encoding as pieces, ``out(piece)`` each."""


def compile_writer(schema: dict[str, Any]) -> Writer:
    """The record writer behind ``compile_encoder``: pieces of bytes to ``out``."""
    gen = _Gen()
    entry = _enc_record_function(gen, schema)
    namespace: dict[str, Any] = {
        "long_bytes": long_bytes,
        "SMALL": _SMALL,
        "SMALL_AFTER": _SMALL_AFTER,
        "EncodeError": EncodeError,
        "describe": _describe,
        "pack_f": _STRUCT_F.pack,
        "pack_d": _STRUCT_D.pack,
    }
    source = "\n\n".join(gen.functions)
    exec(compile(source, f"<avro encoder {schema['name']}>", "exec"), namespace)
    writer: Writer = namespace[entry]
    return writer


def compile_encoder(schema: dict[str, Any]) -> Encoder:
    """An encoder of records of ``schema`` to Avro binary (without any header).

    Absent fields with a default are written with it; a missing required
    field or a value of the wrong type raises ``EncodeError`` naming the field.
    """
    inner = compile_writer(schema)

    def encode(record: Any, prefix: bytes = b"") -> bytes:
        parts: list[bytes] = [prefix]
        inner(record, parts.append)
        return b"".join(parts)

    return encode

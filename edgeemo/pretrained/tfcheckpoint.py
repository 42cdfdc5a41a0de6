"""A TensorFlow-free reader of TF "tensor bundle" checkpoints (``.index`` + ``.data-*``).

Owns only the file format: the ``.index`` file is a LevelDB-style SSTable (48-byte
footer, prefix-compressed blocks with a restart array and a 5-byte trailer, written
uncompressed by TensorFlow) mapping each tensor name to a ``BundleEntryProto``; the
empty key holds the ``BundleHeaderProto``. Tensor bytes are raw little-endian in
``<prefix>.data-0000S-of-0000N`` at the entry's offset/size. Protobuf varints are
decoded by hand, so neither TensorFlow nor protobuf is needed. Checksums are not
verified; sizes, offsets and shapes are, and any inconsistency is an
:class:`~edgeemo.errors.EdgeemoError`.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edgeemo.errors import EdgeemoError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5

# TF DataType enum -> numpy dtype (little-endian)
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}


class _Corrupt(Exception):
    pass


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Corrupt("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """Decode one protobuf message into ``(field, wire_type, value)`` triples."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _Corrupt("truncated fixed64")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise _Corrupt("truncated length-delimited field")
            value = bytes(buf[pos : pos + n])
            pos += n
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _Corrupt("truncated fixed32")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise _Corrupt(f"unsupported protobuf wire type {wire}")
        out.append((field, wire, value))
    return out


def _read_block(data: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """Entries ``(key, value)`` of the SSTable block at ``offset`` (``size`` excludes the trailer)."""
    end = offset + size
    if offset < 0 or size < 4 or end + BLOCK_TRAILER_SIZE > len(data):
        raise _Corrupt(f"block at {offset}+{size} lies outside the file")
    if data[end] != 0:
        raise _Corrupt(f"compressed block (type {data[end]}) is not supported")
    block = memoryview(data)[offset:end]
    n_restarts = struct.unpack_from("<I", block, size - 4)[0]
    limit = size - 4 - 4 * n_restarts
    if limit < 0:
        raise _Corrupt("bad restart array")
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise _Corrupt("bad block entry")
        key = key[:shared] + bytes(block[pos : pos + non_shared])
        pos += non_shared
        entries.append((key, bytes(block[pos : pos + value_len])))
        pos += value_len
    return entries


def _read_index(data: bytes) -> list[tuple[bytes, bytes]]:
    if len(data) < FOOTER_SIZE:
        raise _Corrupt("shorter than the 48-byte footer")
    footer = data[-FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, 40)[0] != TABLE_MAGIC:
        raise _Corrupt("bad table magic (not a TF checkpoint index, or truncated)")
    _meta_off, pos = _varint(footer, 0)
    _meta_size, pos = _varint(footer, pos)
    index_off, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    entries: list[tuple[bytes, bytes]] = []
    for _last_key, handle in _read_block(data, index_off, index_size):
        off, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        entries.extend(_read_block(data, off, size))
    return entries


def _parse_entry(value: bytes) -> tuple[int, tuple[int, ...], int, int, int]:
    """BundleEntryProto -> (dtype, shape, shard_id, offset, size)."""
    dtype, shard, offset, size = 0, 0, 0, 0
    shape: list[int] = []
    for field, _wire, v in _proto_fields(value):
        if field == 1:
            dtype = int(v)  # type: ignore[arg-type]
        elif field == 2:
            for f2, _w2, dim in _proto_fields(v):  # type: ignore[arg-type]
                if f2 == 2:
                    dim_size = 0
                    for f3, _w3, s in _proto_fields(dim):  # type: ignore[arg-type]
                        if f3 == 1:
                            dim_size = int(s)  # type: ignore[arg-type]
                    shape.append(dim_size)
                elif f2 == 3 and v:
                    raise _Corrupt("tensor with unknown rank")
        elif field == 3:
            shard = int(v)  # type: ignore[arg-type]
        elif field == 4:
            offset = int(v)  # type: ignore[arg-type]
        elif field == 5:
            size = int(v)  # type: ignore[arg-type]
        elif field == 7:
            raise _Corrupt("partitioned (sliced) tensors are not supported")
    return dtype, tuple(shape), shard, offset, size


def _num_shards(header: bytes) -> int:
    n = 1
    for field, _wire, v in _proto_fields(header):
        if field == 1:
            n = int(v)  # type: ignore[arg-type]
        elif field == 2 and v != 0:
            raise _Corrupt("big-endian checkpoints are not supported")
    return n


def read_checkpoint(prefix: Path | str) -> dict[str, np.ndarray]:
    """Read every tensor of the checkpoint ``prefix`` (files ``prefix + ".index"`` and ``prefix + ".data-*"``).

    ``prefix`` is the path without ``.index``; for checkpoints saved with a folder
    prefix (like musicnn's) pass ``"<folder>/"`` so the files are ``<folder>/.index``.
    Returns ``{tensor name: array}`` in key order. Raises :class:`EdgeemoError` on a
    missing, truncated or corrupt file or an unsupported dtype.
    """
    prefix = str(prefix)
    index_path = Path(prefix + ".index")
    try:
        index = index_path.read_bytes()
    except OSError as exc:
        raise EdgeemoError(f"cannot read checkpoint index ({exc.strerror})", path=index_path) from None
    try:
        entries = _read_index(index)
        n_shards = 1
        parsed = []
        for key, value in entries:
            if key == b"":
                n_shards = _num_shards(value)
            else:
                parsed.append((key.decode("utf-8"), _parse_entry(value)))
    except (_Corrupt, struct.error, UnicodeDecodeError) as exc:
        raise EdgeemoError(f"corrupt checkpoint index ({exc})", path=index_path) from None
    shards: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for name, (dtype, shape, shard, offset, size) in parsed:
        if dtype not in DTYPES:
            raise EdgeemoError(f"tensor {name!r} has unsupported TF dtype {dtype}", path=index_path)
        if shard >= n_shards:
            raise EdgeemoError(f"tensor {name!r} names shard {shard} of {n_shards}", path=index_path)
        if shard not in shards:
            data_path = Path(f"{prefix}.data-{shard:05d}-of-{n_shards:05d}")
            try:
                shards[shard] = data_path.read_bytes()
            except OSError as exc:
                raise EdgeemoError(f"cannot read checkpoint data ({exc.strerror})", path=data_path) from None
        np_dtype = DTYPES[dtype]
        count = int(np.prod(shape, dtype=np.int64))
        if count * np_dtype.itemsize != size:
            raise EdgeemoError(f"tensor {name!r}: size {size} does not match shape {shape}", path=index_path)
        buf = shards[shard]
        if offset + size > len(buf):
            raise EdgeemoError(f"tensor {name!r} lies past the end of its data file (truncated?)", path=index_path)
        out[name] = (
            np.frombuffer(buf, dtype=np_dtype, count=count, offset=offset)
            .reshape(shape)
            .astype(np_dtype.newbyteorder("="), copy=True)
        )
    return out

"""Recover the intact messages of an MCAP file whose end is missing.

A recorder that was killed, or a copy that was interrupted, leaves an MCAP file without its summary
and footer (and a rosbag2 directory without metadata.yaml); indexed readers refuse such a file.
The records before the damage are still valid, so this scanner walks them from the start (MCAP
format: 8-byte magic, then records of opcode uint8 + length uint64 + content, little-endian) and
yields every complete message, stopping at the first incomplete or corrupt record.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

MAGIC = b"\x89MCAP0\r\n"
OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x03, 0x04, 0x05, 0x06
MAX_CHUNK_BYTES = 256 * 1024 * 1024
"""A chunk header claiming more than this (uncompressed) is corrupt: recorders write chunks of a few MB."""


@dataclass
class ScannedMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


@dataclass
class McapScan:
    """Messages of one MCAP file in file order; `stopped` says why the scan ended early, if it did."""

    path: Path
    stopped: str = ""
    topics: dict[str, str] = field(default_factory=dict)
    """Topic -> message type of every channel seen so far."""

    def __iter__(self) -> Iterator[ScannedMessage]:
        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, int]] = {}
        try:
            with open(self.path, "rb") as f:
                if f.read(8) != MAGIC:
                    self.stopped = "not an MCAP file (bad magic)"
                    return
                yield from self._records(f, schemas, channels, top_level=True)
        except _Damaged as exc:
            self.stopped = str(exc)
        except (struct.error, UnicodeDecodeError, ValueError, EOFError, RuntimeError, zlib.error) as exc:
            # a record whose fields contradict its bytes (a string or chunk longer than the record,
            # a broken compressed stream): the file is damaged from there on
            self.stopped = f"a damaged record ({type(exc).__name__}: {exc})"

    def _records(self, f: BinaryIO, schemas: dict[int, str], channels: dict[int, tuple[str, int]],
                 top_level: bool) -> Iterator[ScannedMessage]:
        while True:
            head = f.read(9)
            if not head:
                if top_level:
                    raise _Damaged("file ends without a footer")
                return
            if len(head) < 9:
                raise _Damaged("file ends inside a record header")
            opcode, length = struct.unpack("<BQ", head)
            remaining = _remaining(f)
            if length > remaining:  # checked before reading: a damaged length must not allocate gigabytes
                raise _Damaged(f"file ends inside a record (opcode 0x{opcode:02x}, {length} bytes, "
                               f"{remaining} left)")
            body = f.read(length)
            if len(body) < length:
                raise _Damaged(f"file ends inside a record (opcode 0x{opcode:02x}, {length} bytes)")
            if opcode == 0x02:  # footer: the file is complete
                return
            if opcode == OP_SCHEMA:
                schema_id, name, _ = _unpack_schema(body)
                schemas[schema_id] = name
            elif opcode == OP_CHANNEL:
                channel_id, schema_id, topic = _unpack_channel(body)
                channels[channel_id] = (topic, schema_id)
                self.topics[topic] = schemas.get(schema_id, "")
            elif opcode == OP_MESSAGE:
                channel_id, _seq, log_time = struct.unpack_from("<HIQ", body)
                if channel_id in channels:
                    topic, schema_id = channels[channel_id]
                    yield ScannedMessage(topic, schemas.get(schema_id, ""), log_time, body[22:])
            elif opcode == OP_CHUNK and top_level:
                import io

                yield from self._records(io.BytesIO(_chunk_records(body)), schemas, channels, top_level=False)


class _Damaged(Exception):
    pass


def _remaining(f: BinaryIO) -> int:
    """Bytes left after the current position (a file, or the BytesIO of a chunk)."""
    here = f.tell()
    end = f.seek(0, 2)
    f.seek(here)
    return end - here


def _string(body: bytes, offset: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", body, offset)
    return body[offset + 4: offset + 4 + n].decode(), offset + 4 + n


def _unpack_schema(body: bytes) -> tuple[int, str, str]:
    (schema_id,) = struct.unpack_from("<H", body)
    name, offset = _string(body, 2)
    encoding, _ = _string(body, offset)
    return schema_id, name, encoding


def _unpack_channel(body: bytes) -> tuple[int, int, str]:
    channel_id, schema_id = struct.unpack_from("<HH", body)
    topic, _ = _string(body, 4)
    return channel_id, schema_id, topic


def _chunk_records(body: bytes) -> bytes:
    _start, _end, size, crc = struct.unpack_from("<QQQI", body)
    compression, offset = _string(body, 28)
    (n,) = struct.unpack_from("<Q", body, offset)
    data = body[offset + 8: offset + 8 + n]
    if size > MAX_CHUNK_BYTES:
        raise _Damaged(f"a chunk claims {size} bytes uncompressed, more than a recording writes; corrupt header")
    if compression == "zstd":
        try:
            from compression import zstd  # Python >= 3.14
        except ImportError:
            from backports import zstd
        data = zstd.decompress(data)
    elif compression == "lz4":
        from lz4.frame import decompress

        data = decompress(data)
    elif compression:
        raise _Damaged(f"chunk compression '{compression}' is not supported")
    if len(data) != size or (crc and zlib.crc32(data) != crc):
        raise _Damaged("a chunk is corrupt (size or CRC mismatch)")
    return data

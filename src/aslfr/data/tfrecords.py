"""The seed's published dataset format, read (and written, for tests) without TensorFlow.

A file is GZIP-compressed TFRecord: records of [u64 length][u32 masked crc32c of length]
[data][u32 masked crc32c of data], each data a tf.train.Example protobuf with float lists
`frames` (T * 200 values, per frame the 100 x then the 100 y of the selected columns) and
`phrase` (character indices). Optional int64 features `sequence_id` and `participant_id` are
read when present; otherwise ids are derived from the file and record position.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import google_crc32c
import numpy as np

from aslfr.vocab import decode_indices


class TFRecordError(ValueError):
    pass


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- minimal protobuf wire format -----------------------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TFRecordError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of a message; length-delimited values as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        else:
            raise TFRecordError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _parse_feature(buf: bytes) -> np.ndarray | list[bytes]:
    for kind, _, value in _fields(buf):
        if kind == 2:  # FloatList
            parts = [np.frombuffer(v, "<f4") if w == 2 else np.frombuffer(v, "<f4")
                     for f, w, v in _fields(value) if f == 1]
            return np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if kind == 3:  # Int64List
            out: list[int] = []
            for f, w, v in _fields(value):
                if f != 1:
                    continue
                if w == 2:
                    p = 0
                    while p < len(v):
                        x, p = _varint(v, p)
                        out.append(x)
                else:
                    out.append(v)
            return np.array([x - (1 << 64) if x >= 1 << 63 else x for x in out], np.int64)
        if kind == 1:  # BytesList
            return [v for f, _, v in _fields(value) if f == 1]
    return np.zeros(0, np.float32)


def parse_example(buf: bytes) -> dict[str, np.ndarray | list[bytes]]:
    features: dict[str, np.ndarray | list[bytes]] = {}
    for f, _, value in _fields(buf):
        if f != 1:
            continue
        for g, _, entry in _fields(value):  # map<string, Feature> entries
            if g != 1:
                continue
            key, feat = "", b""
            for h, _, v in _fields(entry):
                if h == 1:
                    key = v.decode()
                elif h == 2:
                    feat = v
            features[key] = _parse_feature(feat)
    return features


def _key(field: int, wire: int) -> bytes:
    return _encode_varint(field << 3 | wire)


def _encode_varint(x: int) -> bytes:
    out = bytearray()
    while True:
        b = x & 0x7F
        x >>= 7
        out.append(b | (0x80 if x else 0))
        if not x:
            return bytes(out)


def _len_delim(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _encode_varint(len(payload)) + payload


def encode_example(floats: dict[str, np.ndarray], ints: dict[str, list[int]] | None = None) -> bytes:
    entries = b""
    for name, values in floats.items():
        flist = _len_delim(1, np.asarray(values, "<f4").tobytes())
        entries += _len_delim(1, _len_delim(1, name.encode()) + _len_delim(2, _len_delim(2, flist)))
    for name, ivalues in (ints or {}).items():
        packed = b"".join(_encode_varint(v & 0xFFFFFFFFFFFFFFFF) for v in ivalues)
        entries += _len_delim(1, _len_delim(1, name.encode()) + _len_delim(2, _len_delim(3, _len_delim(1, packed))))
    return _len_delim(1, entries)


# --- record framing --------------------------------------------------------------------------

def read_records(path: Path) -> Iterator[bytes]:
    try:
        data = gzip.open(path, "rb").read()
    except (OSError, EOFError) as e:
        raise TFRecordError(f"{path}: not a GZIP TFRecord file ({e})") from None
    pos, n = 0, 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise TFRecordError(f"{path}: record {n} is truncated")
        (length,), (len_crc,) = struct.unpack_from("<Q", data, pos), struct.unpack_from("<I", data, pos + 8)
        if _masked_crc(data[pos:pos + 8]) != len_crc:
            raise TFRecordError(f"{path}: record {n} has a corrupt length")
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(data):
            raise TFRecordError(f"{path}: record {n} is truncated")
        payload = data[start:end]
        if _masked_crc(payload) != struct.unpack_from("<I", data, end)[0]:
            raise TFRecordError(f"{path}: record {n} fails its checksum")
        yield payload
        pos, n = end + 4, n + 1


def write_records(path: Path, payloads: list[bytes]) -> None:
    with gzip.open(path, "wb") as f:
        for p in payloads:
            head = struct.pack("<Q", len(p))
            f.write(head + struct.pack("<I", _masked_crc(head)) + p + struct.pack("<I", _masked_crc(p)))


@dataclass
class Record:
    sequence_id: int
    participant_id: int
    phrase: str
    rows: np.ndarray  # [T, 200] float32


def read_seed_file(path: Path, file_id: int) -> list[Record]:
    """All records of one seed TFRecord file."""
    out = []
    for i, payload in enumerate(read_records(path)):
        feats = parse_example(payload)
        if "frames" not in feats or "phrase" not in feats:
            raise TFRecordError(f"{path}: record {i} lacks the 'frames' or 'phrase' feature "
                                f"(has {sorted(feats)})")
        frames = np.asarray(feats["frames"], np.float32)
        if frames.size % 200:
            raise TFRecordError(f"{path}: record {i}: 'frames' holds {frames.size} values, not a multiple of 200")
        labels = np.asarray(feats["phrase"]).astype(np.int64)
        seq = feats.get("sequence_id")
        part = feats.get("participant_id")
        out.append(Record(
            sequence_id=int(seq[0]) if isinstance(seq, np.ndarray) and seq.size else file_id * 100_000 + i,
            participant_id=int(part[0]) if isinstance(part, np.ndarray) and part.size else -1,
            phrase=decode_indices(labels),
            rows=frames.reshape(-1, 200),
        ))
    return out


def file_id_of(path: Path, position: int) -> int:
    """The seed named its files by the source parquet's file_id; fall back to the position."""
    stem = path.name.split(".")[0]
    return int(stem) if stem.isdigit() else position

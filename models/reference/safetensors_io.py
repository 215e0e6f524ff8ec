"""Minimal safetensors reader/writer with struct + json + numpy only.

File layout: 8-byte little-endian unsigned header length N, N bytes of UTF-8
JSON header (padded with spaces), then the data section. The header maps each
tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
relative to the data section) plus an optional "__metadata__" string->string
map. Tensors are stored C-contiguous, little-endian, back to back.
"""
import json
import os
import struct
import tempfile

import numpy as np

DTYPES = {  # safetensors name -> numpy dtype (little-endian)
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}
NAMES = {np.dtype(v).str: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


def _bf16_to_f32(raw):
    u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
    return u.view(np.float32)


def f32_to_bf16_bytes(a):
    """Round-to-nearest-even float32 -> bfloat16 raw little-endian bytes."""
    u = np.asarray(a, dtype=np.float32, order="C").view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype("<u2").tobytes()


def encode(tensors, metadata=None, dtypes=None, align=8):
    """Bytes of a safetensors file. @tensors: name -> numpy array (any
    dtype in DTYPES); @dtypes: optional name -> "BF16"/"F16"/... to convert
    a float tensor on write; @metadata: str -> str."""
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"metadata {k!r}: keys and values must be strings")
        header["__metadata__"] = dict(metadata)
    chunks, offset = [], 0
    for name, arr in tensors.items():
        if name == "__metadata__":
            raise ValueError("a tensor cannot be named __metadata__")
        arr = np.asarray(arr)
        want = (dtypes or {}).get(name)
        if want == "BF16":
            raw = f32_to_bf16_bytes(arr)
            dt = "BF16"
        else:
            if want:
                arr = arr.astype(DTYPES[want])
            # np.asarray keeps 0-d arrays 0-d (ascontiguousarray would not)
            arr = np.asarray(arr, order="C", dtype=arr.dtype.newbyteorder("<")
                             if arr.dtype.itemsize > 1 else arr.dtype)
            dt = NAMES.get(arr.dtype.str)
            if dt is None:
                raise TypeError(f"{name}: dtype {arr.dtype} not storable")
            raw = arr.tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((-(8 + len(hb))) % align)
    return struct.pack("<Q", len(hb)) + hb + b"".join(chunks)


def save(path, tensors, metadata=None, dtypes=None):
    """Writes atomically: temp file in the same directory, fsync, rename."""
    data = encode(tensors, metadata, dtypes)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r} in the header")
        d[k] = v
    return d


def decode(buf):
    """(tensors name -> numpy array, metadata dict, header dict) from bytes.
    BF16 tensors come back as float32. Raises ValueError on a malformed file."""
    if len(buf) < 8:
        raise ValueError("file shorter than the 8-byte header length")
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > MAX_HEADER or 8 + n > len(buf):
        raise ValueError(f"header length {n} exceeds the file or the limit")
    header = json.loads(bytes(buf[8:8 + n]).decode("utf-8"),
                        object_pairs_hook=_no_duplicates)
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    data = memoryview(buf)[8 + n:]
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    spans = []
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in DTYPES and dt != "BF16":
            raise ValueError(f"{name}: unknown dtype {dt!r}")
        shape = [int(s) for s in info["shape"]]
        b, e = (int(x) for x in info["data_offsets"])
        if not 0 <= b <= e <= len(data):
            raise ValueError(f"{name}: data_offsets out of range")
        count = int(np.prod(shape)) if shape else 1
        size = 2 if dt == "BF16" else np.dtype(DTYPES[dt]).itemsize
        if count * size != e - b:
            raise ValueError(f"{name}: byte size does not match shape")
        raw = bytes(data[b:e])
        arr = _bf16_to_f32(raw) if dt == "BF16" else np.frombuffer(raw, DTYPES[dt])
        tensors[name] = arr.reshape(shape)
        spans.append((b, e, name))
    spans.sort()
    pos = 0
    for b, e, name in spans:
        if b != pos:
            raise ValueError(f"{name}: tensors overlap or leave a hole")
        pos = e
    if pos != len(data):
        raise ValueError("data section has trailing bytes")
    return tensors, meta, header


def load(path):
    with open(path, "rb") as f:
        return decode(f.read())

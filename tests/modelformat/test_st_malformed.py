#!/usr/bin/python3
"""Malformed safetensors files: each gives its specific error from the C
parser, never a crash (also run under AddressSanitizer, suite asan)."""
import json
import os
import struct

import numpy as np

import mfutil
import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()


def blob(header, data=b"", pad=True):
    """File bytes from a header (dict or raw str/bytes) and a data section."""
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode("utf-8")
    if pad:
        header += b" " * ((-(8 + len(header))) % 8)
    return struct.pack("<Q", len(header)) + header + data


def t(dtype="F32", shape=(2, 2), offsets=(0, 16)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


f4 = np.arange(4, dtype="<f4").tobytes()
good_hdr = {"__metadata__": {"format": "gst-wsiseg-model"}, "w": t()}
good = blob(good_hdr, f4)
nan_data = np.array([1, 2, np.nan, 4], "<f4").tobytes()
inf_half = np.array([1, np.inf, 0, 0], "<f2").tobytes()
bf_nan = struct.pack("<4H", 0x3f80, 0x3f80, 0x3f80, 0x7fc0)

cases = [
    ("empty file", b"", "shorter than the 8-byte header length"),
    ("5-byte file", b"\x10\0\0\0\0", "shorter than the 8-byte header length"),
    ("header length lying (past the end)",
     struct.pack("<Q", 1000) + good[8:], "runs past the end of the file"),
    ("header length beyond the limit", struct.pack("<Q", 1 << 63) + good[8:],
     "exceeds the 104857600-byte limit"),
    ("truncated in the header", good[:20], "runs past the end of the file"),
    ("truncated in the data", good[:-3], "beyond the data section"),
    ("header not an object", blob("[1, 2]"), "does not start with '{'"),
    ("zero header length", struct.pack("<Q", 0), "does not start with '{'"),
    ("invalid UTF-8", blob(b'{"w\xff": 1}'), "not valid UTF-8"),
    ("NUL byte in the header", blob(b'{"a\x00": 1}'), "not valid UTF-8"),
    ("bad JSON: missing brace", blob('{"w": {"dtype": "F32"'), "unexpected end of the header"),
    ("bad JSON: trailing comma", blob('{"w": 1,}'), "expected a string key"),
    ("bad JSON: comment", blob('{"w": 1 /* c */}'), "expected ',' or '}'"),
    ("bad JSON: single quotes", blob("{'w': 1}"), "expected a string key"),
    ("bad JSON: hex number", blob('{"w": 0x10}'), "expected ',' or '}'"),
    ("bad JSON: leading zero", blob('{"w": 01}'), "leading zero"),
    ("bad JSON: trailing data", blob('{"w": 1} {"x": 2}'), "trailing characters"),
    ("bad JSON: control character", blob('{"w\n": 1}'), "control character 0x0a"),
    ("bad JSON: NUL escape", blob('{"w\\u0000": 1}'), "NUL character"),
    ("bad JSON: lone surrogate", blob('{"w\\ud800": 1}'), "unpaired high surrogate"),
    ("bad JSON: bad escape", blob('{"w\\q": 1}'), "bad escape"),
    ("deep nesting", blob('{"w": ' + "[" * 100000 + "]" * 100000 + "}"),
     "nested deeper than 64 levels"),
    ("duplicate tensor name",
     blob('{"w": %s, "w": %s}' % (json.dumps(t()), json.dumps(t(offsets=(16, 32)))),
          f4 + f4), 'duplicate key "w"'),
    ("duplicate metadata key", blob('{"__metadata__": {"k": "a", "k": "b"}}'),
     'duplicate key "k"'),
    ("unknown dtype", blob({"w": t("F8")}, f4), 'tensor "w": unknown dtype "F8"'),
    ("dtype not a string", blob({"w": t(3)}, f4), 'tensor "w": dtype is not a string'),
    ("negative shape", blob({"w": t(shape=(-2, -2))}, f4), "shape[0] = -2 is negative"),
    ("fractional shape", blob({"w": t(shape=(2, 2.5))}, f4), "shape[1] is not an integer"),
    ("shape not an array", blob({"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}}, f4),
     "shape is not an array"),
    ("too many dims", blob({"w": t(shape=[1] * 9 + [4])}, f4), "at most 8"),
    ("shape/size mismatch", blob({"w": t(shape=(3,))}, f4),
     'tensor "w": shape and dtype F32 need 12 bytes, data_offsets hold 16'),
    ("dtype/size mismatch", blob({"w": t("F64")}, f4), "need 32 bytes, data_offsets hold 16"),
    ("element count overflow", blob({"w": t(shape=(1 << 32, 1 << 32, 1 << 32))}, f4),
     'tensor "w": element count overflows'),
    ("byte size overflow", blob({"w": t("F64", shape=(1 << 62,))}, f4), "byte size overflows"),
    ("integer beyond 64 bits (would wrap to 16)",
     blob('{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 18446744073709551632]}}', f4),
     "beyond the 64-bit range"),
    ("offsets end < begin", blob({"w": t(offsets=(16, 0))}, f4), "begin 16 > end 0"),
    ("offsets beyond the data", blob({"w": t(offsets=(16, 32))}, f4), "end 32 beyond the data section (16 bytes)"),
    ("offsets not a pair", blob({"w": t(offsets=(0,))}, f4), "needs [begin, end]"),
    ("negative offset", blob({"w": t(offsets=(-16, 0))}, f4), "data_offsets[0] = -16 is negative"),
    ("overlapping tensors",
     blob({"a": t(offsets=(0, 16)), "b": t(offsets=(8, 24))}, f4 + f4[:8]),
     'tensor "b" (bytes 8..24) overlaps tensor "a"'),
    ("hole between tensors",
     blob({"a": t(shape=(2,), offsets=(0, 8)), "b": t(shape=(1,), offsets=(12, 16))}, f4),
     'unused bytes before tensor "b"'),
    ("trailing data bytes", blob({"w": t()}, f4 + b"\0" * 8), "8 bytes after the last tensor"),
    ("missing data_offsets", blob({"w": {"dtype": "F32", "shape": [4]}}, f4), 'missing "data_offsets"'),
    ("unexpected key in a tensor", blob({"w": dict(t(), extra=1)}, f4), 'unexpected key "extra"'),
    ("tensor entry not an object", blob({"w": [1]}, f4), 'tensor "w": entry is not an object'),
    ("empty tensor name", blob({"": t()}, f4), "empty name"),
    ("NaN weight", blob({"w": t()}, nan_data), 'tensor "w": NaN at element 2'),
    ("Inf weight (F16)", blob({"h": t("F16", offsets=(0, 8))}, inf_half), 'tensor "h": Inf at element 1'),
    ("NaN weight (BF16)", blob({"b": t("BF16", offsets=(0, 8))}, bf_nan), 'tensor "b": NaN at element 3'),
    ("metadata value not a string", blob({"__metadata__": {"k": 1}}), 'metadata "k": value is not a string'),
    ("metadata value null", blob({"__metadata__": {"k": None}}), 'metadata "k": value is not a string'),
    ("metadata not an object", blob({"__metadata__": "x"}), "__metadata__ is not an object"),
]

for name, data, want in cases:
    path = os.path.join(tmp, "bad.safetensors")
    with open(path, "wb") as f:
        f.write(data)
    p = mfutil.st_tool("check", path)
    out = p.stdout.strip()
    ok = p.returncode == 1 and out.startswith("error: ") and want in out
    c.check(ok and not mfutil.crashed(p), name, out[:300] if ok else
            f"rc {p.returncode}: {out[:300]} {p.stderr[-500:]}")

# sanity: the good base file is accepted
path = os.path.join(tmp, "good.safetensors")
open(path, "wb").write(good)
p = mfutil.st_tool("check", path)
c.check(p.returncode == 0, "well-formed file accepted", p.stdout.strip())

# gst-wsiseg metadata checks (file structure fine, metadata wrong)
base = {"format": "gst-wsiseg-model", "format_version": "1", "arch": "unet",
        "n_classes": "2", "class_names": '["bg", "tumor"]',
        "class_colors": "[[0, 0, 0], [255, 0, 0]]", "preprocess": "rescale01",
        "input_layout": "NCHW", "mpp": "0.5", "patch_size": "256"}
meta_cases = [
    ("complete metadata", {}, None),
    ("missing n_classes", {"n_classes": None}, 'metadata "n_classes" missing'),
    ("wrong format", {"format": "other"}, 'metadata format "other" is not'),
    ("future version", {"format_version": "2"}, 'format_version "2" unsupported'),
    ("n_classes not a number", {"n_classes": "two"}, 'n_classes "two" is not an integer'),
    ("n_classes zero", {"n_classes": "0"}, "is not an integer in 1..65536"),
    ("class_names count", {"class_names": '["bg"]'}, "class_names: need a JSON list of 2 strings"),
    ("class_names bad JSON", {"class_names": '["bg", '}, "class_names: need a JSON list"),
    ("class_names not strings", {"class_names": '["bg", 3]'}, "class_names[1] is not a string"),
    ("class colour out of range", {"class_colors": "[[0, 0, 0], [256, 0, 0]]"},
     "class_colors[1] is not [r, g, b]"),
    ("class colour not a triple", {"class_colors": "[[0, 0], [1, 2, 3]]"}, "class_colors[0]"),
    ("unknown preprocess", {"preprocess": "whiten"}, 'preprocess "whiten" is not'),
    ("standardize without mean", {"preprocess": "standardize", "std": "[1, 1, 1]"},
     "metadata mean: need a JSON list of 3 finite numbers"),
    ("standardize std zero", {"preprocess": "standardize", "mean": "[0.5, 0.5, 0.5]",
                              "std": "[0.2, 0, 0.2]"}, "metadata std: need"),
    ("standardize fine", {"preprocess": "standardize", "mean": "[0.5, 0.5, 0.5]",
                          "std": "[0.2, 0.1, 0.2]"}, None),
    ("layout", {"input_layout": "NHWC"}, 'input_layout "NHWC": only NCHW'),
    ("mpp negative", {"mpp": "-1"}, 'mpp "-1" is not a number >= 0'),
    ("mpp text", {"mpp": "half"}, 'mpp "half"'),
    ("patch_size", {"patch_size": "-5"}, 'patch_size "-5"'),
    ("deeply nested class_names", {"class_names": "[" * 10000}, "class_names: need"),
]
for name, change, want in meta_cases:
    m = dict(base)
    for k, v in change.items():
        if v is None:
            m.pop(k)
        else:
            m[k] = v
    path = os.path.join(tmp, "meta.safetensors")
    open(path, "wb").write(blob({"__metadata__": m, "w": t()}, f4))
    p = mfutil.st_tool("checkmeta", path)
    out = p.stdout.strip()
    if want is None:
        ok = p.returncode == 0 and out == "ok"
    else:
        ok = p.returncode == 1 and want in out
    c.check(ok and not mfutil.crashed(p), f"metadata: {name}",
            out[:300] if ok else f"rc {p.returncode}: {out[:300]} {p.stderr[-300:]}")
c.finish()

#!/usr/bin/python3
"""Writes the hand-made seed inputs of the safetensors fuzz corpus
(tests/fuzz/corpus/seed-*). Run once; libFuzzer adds its own finds."""
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "models", "reference"))
import safetensors_io  # noqa: E402

out = os.path.join(HERE, "corpus")
os.makedirs(out, exist_ok=True)
meta = {"format": "gst-wsiseg-model", "format_version": "1", "arch": "unet",
        "n_classes": "2", "class_names": '["bg", "tumor"]',
        "class_colors": "[[0, 0, 0], [255, 0, 0]]", "preprocess": "standardize",
        "mean": "[0.5, 0.5, 0.5]", "std": "[0.2, 0.2, 0.2]", "input_layout": "NCHW",
        "mpp": "0.5", "patch_size": "256", "size_multiple": "16"}
r = np.random.default_rng(1)
seeds = {
    "model": safetensors_io.encode({"down.0.conv1.conv.weight": r.standard_normal((2, 3, 1, 1)).astype("f4"),
                                    "head.bias": np.zeros(2, "f4")}, meta),
    "dtypes": safetensors_io.encode({"h": np.ones(3, "f2"), "d": np.ones(2, "f8"),
                                     "b": np.ones(2, "f4"), "i": np.arange(2, dtype="i8"),
                                     "u": np.arange(3, dtype="u1"), "t": np.array([True])},
                                    {"k": "v"}, dtypes={"b": "BF16"}),
    "scalar-empty": safetensors_io.encode({"s": np.array(1.5, "f4"), "e": np.zeros((0, 4), "f4")}),
    "unicode": safetensors_io.encode({"w\u00e9\U0001F52C": np.ones(1, "f4")},
                                     {"note": 'q"\\\n\u00e9'}),
    "no-tensors": safetensors_io.encode({}, {"a": "b"}),
}
bad_hdr = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()
seeds["hole"] = struct.pack("<Q", len(bad_hdr)) + bad_hdr + b"\0" * 12
esc = b'{"a\\u00e9\\ud83d\\udd2c":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
seeds["escapes"] = struct.pack("<Q", len(esc)) + esc + b"\0\0\0\0"
for name, data in seeds.items():
    with open(os.path.join(out, f"seed-{name}"), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {out}")

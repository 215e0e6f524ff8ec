#!/usr/bin/python3
"""Round trip: Python writer -> C parser -> C writer -> Python reader.

Values read by C (and converted to float32) must equal numpy's conversion of
what Python wrote; names, dtypes, shapes and metadata must survive."""
import json
import os

import numpy as np

import mfutil
import safetensors_io
import wsitest

c = wsitest.Checks()
tmp = wsitest.tmpdir()
rng = np.random.default_rng(7)

f16 = np.concatenate([rng.standard_normal(50).astype(np.float16),
                      np.array([0, -0.0, 6.0e-8, -6.0e-8, 6.1e-5, 65504, -65504],
                               np.float16)])
tensors = {
    "conv.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
    "scalar": np.array(3.25, np.float32),
    "empty": np.zeros((0, 5), np.float32),
    "vec": rng.standard_normal(1000).astype(np.float32) * 1e30,
    "tiny": np.array([1e-45, -1e-45, 1.1754942e-38], np.float32),
    "half": f16,
    "bf": rng.standard_normal((4, 7)).astype(np.float32),
    "double": rng.standard_normal((3, 3)) * 1e10,
    "big": rng.standard_normal(300_000).astype(np.float32),
}
meta = {"format": "gst-wsiseg-model", "quoted": 'say "hi"\n\ttab \\ slash',
        "unicode": "Zellkern 🔬 é", "json": json.dumps({"a": [1, 2]}),
        "empty": ""}
src = os.path.join(tmp, "in.safetensors")
safetensors_io.save(src, tensors, meta, dtypes={"bf": "BF16"})
expected = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
expected["bf"] = safetensors_io.decode(open(src, "rb").read())[0]["bf"]
# bf16 rounding: decoded values are within bf16 precision of the originals
c.check(np.allclose(expected["bf"], tensors["bf"], rtol=1 / 128), "BF16 encode rounds")

info = mfutil.st_info(src)
names = [t["name"] for t in info["tensors"]]
c.check(names == list(tensors), "C lists tensors in file order", str(names))
want_dt = {"half": "F16", "bf": "BF16", "double": "F64"}
c.check(all(t["dtype"] == want_dt.get(t["name"], "F32") for t in info["tensors"]),
        "C reads dtypes")
c.check(all(t["shape"] == list(np.shape(tensors[t["name"]])) for t in info["tensors"]),
        "C reads shapes (scalar, empty, 4-D)")
c.check(info["metadata"] == meta, "C reads metadata (escapes, unicode, empty)")

out = os.path.join(tmp, "out.safetensors")
p = mfutil.st_tool("convert", src, out)
c.check(p.returncode == 0, "C converts and saves", p.stdout.strip())
raw = open(out, "rb").read()
got, gmeta, header = safetensors_io.decode(raw)
hlen = int.from_bytes(raw[:8], "little")
c.check((8 + hlen) % 8 == 0, "C writer aligns the data section to 8 bytes")
c.check(gmeta == meta, "metadata survives the C writer")
c.check(list(got) == list(tensors), "C writer keeps the tensor order")
for k, v in expected.items():
    g = got.get(k)
    ok = (g is not None and g.dtype == np.float32 and g.shape == v.shape
          and np.array_equal(g.view(np.uint32), v.view(np.uint32)))
    c.check(ok, f"values of {k} equal bit for bit after C F32 conversion")
c.check(not [f for f in os.listdir(tmp) if f.startswith(".")],
        "no temporary files left by the writers")

# data section not 4-aligned: the parser must copy instead of casting
unal = os.path.join(tmp, "unaligned.safetensors")
blob = safetensors_io.encode({"a": np.arange(5, dtype=np.float32)}, align=1)
if (8 + int.from_bytes(blob[:8], "little")) % 4 == 0:
    blob = safetensors_io.encode({"a": np.arange(5, dtype=np.float32)},
                                 {"p": "x"}, align=1)
open(unal, "wb").write(blob)
c.check((8 + int.from_bytes(blob[:8], "little")) % 4 != 0, "test file is unaligned")
p = mfutil.st_tool("convert", unal, os.path.join(tmp, "unal-out.safetensors"))
g = safetensors_io.load(os.path.join(tmp, "unal-out.safetensors"))[0]["a"] \
    if p.returncode == 0 else None
c.check(g is not None and np.array_equal(g, np.arange(5, dtype=np.float32)),
        "unaligned F32 data read correctly", p.stdout.strip())

# integer tensors are listed but not converted to float
ints = os.path.join(tmp, "ints.safetensors")
safetensors_io.save(ints, {"idx": np.arange(6, dtype=np.int64).reshape(2, 3),
                           "flag": np.array([True, False])})
info = mfutil.st_info(ints)
c.check([t["dtype"] for t in info["tensors"]] == ["I64", "BOOL"], "integer dtypes listed")
p = mfutil.st_tool("convert", ints, os.path.join(tmp, "x.safetensors"))
c.check(p.returncode == 1 and 'tensor "idx": dtype I64 is not a float type' in p.stdout,
        "integer tensor refused for float use", p.stdout.strip())

# the C writer's refusals
wdir = os.path.join(tmp, "writer")
os.mkdir(wdir)
p = mfutil.st_tool("writer-errors", wdir)
print(p.stdout, end="")
c.check(p.returncode == 0, "C writer refuses bad input atomically")
c.finish()

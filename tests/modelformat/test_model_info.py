"""wsimodel-info prints what a model file declares (checked against the
metadata export_model.py wrote) and rejects malformed metadata by name."""
import os
import subprocess
import sys

import wsitest

c = wsitest.Checks()
tool = sys.argv[1]
tmp = wsitest.tmpdir()
REF = os.path.join(wsitest.SOURCE_ROOT, "models", "reference")
sys.path.insert(0, REF)
try:
    import safetensors_io  # noqa: E402
except ImportError as e:
    wsitest.skip(f"models/reference needs numpy: {e}")
model = os.path.join(tmp, "m.safetensors")
r = subprocess.run([sys.executable, os.path.join(REF, "export_model.py"), model, "--arch", "unet",
                    "--depth", "2", "--base-width", "4", "--classes", "background,nucleus,boundary",
                    "--colors", "000000,00c800,ffd700", "--mpp", "0.5", "--patch-size", "128"],
                   capture_output=True, text=True)
if r.returncode != 0:
    wsitest.skip(f"cannot export a model (PyTorch missing?): {r.stderr[-300:]}")

p = subprocess.run([tool, model], capture_output=True, text=True)
facts = dict(line.split("=", 1) for line in p.stdout.splitlines())
c.check(p.returncode == 0 and facts.get("arch") == "unet" and facts.get("classes") == "3"
        and facts.get("class_names") == "background,nucleus,boundary"
        and facts.get("class_colors") == "000000,00c800,ffd700" and float(facts.get("mpp", 0)) == 0.5
        and facts.get("patch_size") == "128" and facts.get("preprocess") == "rescale01"
        and facts.get("size_multiple") == "4", "all facts printed as exported", p.stdout + p.stderr)
p = subprocess.run([tool, model, "--get", "mpp"], capture_output=True, text=True)
c.check(p.returncode == 0 and p.stdout.strip() == "0.5", "--get prints one value", p.stdout)
p = subprocess.run([tool, model, "--get", "nonsense"], capture_output=True, text=True)
c.check(p.returncode == 2 and "nonsense" in p.stderr, "unknown key: usage error", p.stderr)

tensors, meta, _ = safetensors_io.load(model)
bad = os.path.join(tmp, "bad.safetensors")
safetensors_io.save(bad, tensors, {**meta, "mpp": "half"})
p = subprocess.run([tool, bad], capture_output=True, text=True)
c.check(p.returncode == 1 and "mpp" in p.stderr, "malformed mpp: error names the key", p.stderr)
# issue #9 point 14: wsimodel-info refuses what segment-fcn refuses (one
# checker, wsi_model_check): tensors missing, of the wrong shape or stray,
# and architecture settings the engine cannot build
name0 = sorted(tensors)[0]
bad_files = {
    "missing tensor": ({k: v for k, v in tensors.items() if k != name0}, meta, name0),
    "tensor of the wrong shape": ({**tensors, name0: tensors[name0].reshape(-1)[:1].copy()}, meta,
                                  name0),
    "stray tensor": ({**tensors, "decoder.extra.weight": tensors[name0]}, meta,
                     "decoder.extra.weight"),
}
for what, (t, m, want) in bad_files.items():
    path = os.path.join(tmp, what.replace(" ", "-") + ".safetensors")
    safetensors_io.save(path, t, m)
    p = subprocess.run([tool, path], capture_output=True, text=True)
    c.check(p.returncode == 1 and want in p.stderr, f"{what}: refused, error names it",
            f"rc={p.returncode} {p.stdout[-200:]} {p.stderr[-300:]}")
    # segment-fcn refuses the same file
    seg = wsitest.gst_launch(f"videotestsrc num-buffers=1 ! video/x-raw,width=32,height=32 ! "
                             f"videoconvert ! video/x-raw,format=RGB ! "
                             f"segment-fcn model={path} ! fakesink", timeout=60)
    c.check(seg.returncode != 0 and want in (seg.stdout + seg.stderr),
            f"{what}: segment-fcn refuses it too", (seg.stdout + seg.stderr)[-300:])
p = subprocess.run([tool, model], capture_output=True, text=True)
c.check(p.returncode == 0, "control: the exported model still passes", p.stderr)
p = subprocess.run([tool, os.path.join(tmp, "missing.safetensors")], capture_output=True, text=True)
c.check(p.returncode == 1 and "missing.safetensors" in p.stderr, "missing file: error", p.stderr)
c.finish()

"""wsimodel-info on a Mask R-CNN file: the common facts and every Mask R-CNN
key as exported; a file wsimrcnn_load refuses is refused with its message."""
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
r = subprocess.run([sys.executable, os.path.join(REF, "export_model.py"), model, "--arch",
                    "maskrcnn", "--classes", "background,nucleus", "--mpp", "0.25",
                    "--patch-size", "256", "--aspect-ratios", "1", "--max-detections", "200",
                    "--meta", "fpn_channels=32", "--meta", "representation=64",
                    "--meta", "mask_width=16"], capture_output=True, text=True)
if r.returncode != 0:
    wsitest.skip(f"cannot export a Mask R-CNN model (torchvision missing?): {r.stderr[-300:]}")
p = subprocess.run([tool, model], capture_output=True, text=True)
facts = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
c.check(p.returncode == 0 and facts.get("arch") == "maskrcnn" and facts.get("classes") == "2"
        and facts.get("class_names") == "background,nucleus" and facts.get("encoder") == "resnet18"
        and float(facts.get("mpp", 0)) == 0.25 and facts.get("size_multiple") == "32"
        and facts.get("backbone") == "resnet18" and facts.get("aspect_ratios") == "[1]"
        and facts.get("anchor_sizes") == "[8, 16, 32, 64, 128]"
        and facts.get("max_detections") == "200" and facts.get("fpn_channels") == "32"
        and facts.get("score_threshold") == "0.5" and facts.get("mask_size") == "28",
        "Mask R-CNN facts printed as exported", p.stdout + p.stderr)
p = subprocess.run([tool, model, "--get", "score_threshold"], capture_output=True, text=True)
c.check(p.returncode == 0 and p.stdout.strip() == "0.5", "--get a Mask R-CNN key", p.stdout)
tensors, meta, _ = safetensors_io.load(model)
bad = os.path.join(tmp, "bad.safetensors")
safetensors_io.save(bad, tensors, {**meta, "aspect_ratios": "[0.5, 1, 2]"})
p = subprocess.run([tool, bad], capture_output=True, text=True)
c.check(p.returncode == 1 and "tensor rpn.head.cls_logits.weight has shape [1,32,1,1], "
        "model expects [3,32,1,1]" in p.stderr, "mismatched file refused by name", p.stderr)
c.finish()

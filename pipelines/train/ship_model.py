#!/usr/bin/python3
"""Turns a training checkpoint into a shipped model file: drops the optimiser
state (__optim__.* tensors), keeps the model metadata, records the training
step/epoch and points at the model card.

  ship_model.py CHECKPOINT OUT.safetensors MODEL_CARD.md"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "models", "reference"))
import safetensors_io  # noqa: E402

if len(sys.argv) != 4:
    sys.exit(__doc__)
tensors, meta, _ = safetensors_io.load(sys.argv[1])
model = {k: v for k, v in tensors.items() if not k.startswith("__optim__.")}
keep = {k: v for k, v in meta.items() if not k.startswith("train_")}
for k in ("train_step", "train_epoch", "train_optimizer"):
    if k in meta:
        keep["trained_" + k[6:]] = meta[k]
keep["model_card"] = sys.argv[3]
safetensors_io.save(sys.argv[2], model, keep)
print(f"wrote {sys.argv[2]}: {len(model)} tensors, step {meta.get('train_step', '?')}")

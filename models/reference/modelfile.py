"""gst-wsiseg model files: metadata keys, save and load of reference modules.

See docs/model-format.md for every key. All metadata values are strings;
lists and numbers are JSON-encoded inside the strings.
"""
import json
import math

import numpy as np
import torch

import safetensors_io
import wsinn_ref

try:  # arch maskrcnn needs torchvision
    import maskrcnn_ref
except ImportError:  # pragma: no cover
    maskrcnn_ref = None

FORMAT = "gst-wsiseg-model"
FORMAT_VERSION = "1"
PREPROCESS = ("rescale01", "rescale11", "standardize")
DEFAULT_COLORS = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25],
                  [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
                  [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]]
# Keys a reader needs; others are optional (defaults in docs/model-format.md).
REQUIRED = ("format", "format_version", "arch", "n_classes", "class_names",
            "class_colors", "preprocess", "input_layout")


def make_metadata(arch, n_classes=2, encoder=None, class_names=None,
                  class_colors=None, preprocess="rescale01", mean=None, std=None,
                  mpp=0.0, patch_size=0, description="", model_card="",
                  extra=None, **hyper):
    """The metadata map (str -> str) of a model. @hyper: depth, base_width,
    output_stride, aspp_width, aspp_rates, vgg_blocks (arch dependent)."""
    raw = {"arch": arch, "n_classes": n_classes}
    if encoder:
        raw["encoder"] = encoder
    raw.update({k: v for k, v in hyper.items() if v is not None})
    hp = _hyperparams(raw)
    n = hp["n_classes"]
    if class_names is None:
        class_names = ["background"] + [f"class{i}" for i in range(1, n)] if n > 1 else ["foreground"]
    if class_colors is None:
        class_colors = [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(n)]
        if n == 1:
            class_colors = [DEFAULT_COLORS[1]]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": hp["arch"],
        "n_classes": str(n),
        "class_names": json.dumps(list(class_names)),
        "class_colors": json.dumps([list(map(int, c)) for c in class_colors]),
        "output": "sigmoid" if n == 1 else "softmax",
        "preprocess": preprocess,
        "input_layout": "NCHW",
        "input_channels": "RGB",
        "mpp": repr(float(mpp)),
        "patch_size": str(int(patch_size)),
        "bn_eps": repr(wsinn_ref.BN_EPS),
    }
    if hp["arch"] == "maskrcnn":
        del meta["output"]
        meta.update(maskrcnn_ref.metadata_keys(hp))
    else:
        meta["encoder"] = hp["encoder"]
        meta["size_multiple"] = str(wsinn_ref.size_multiple(hp))
    for k in ("depth", "base_width", "output_stride", "aspp_width"):
        if k in hp:
            meta[k] = str(hp[k])
    for k in ("aspp_rates", "vgg_blocks"):
        if k in hp:
            meta[k] = json.dumps(hp[k])
    if preprocess == "standardize":
        meta["mean"] = json.dumps([float(v) for v in (mean or [0.5, 0.5, 0.5])])
        meta["std"] = json.dumps([float(v) for v in (std or [0.5, 0.5, 0.5])])
    if description:
        meta["description"] = description
    if model_card:
        meta["model_card"] = model_card
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    errors = check_metadata(meta)
    if errors:
        raise ValueError("; ".join(errors))
    return meta


def check_metadata(meta):
    """List of problems (empty when fine) in a metadata map read from a file."""
    errs = []
    for k, v in meta.items():
        if not isinstance(v, str):
            errs.append(f"metadata {k}: value is not a string")
    for k in REQUIRED:
        if k not in meta:
            errs.append(f"metadata {k}: missing")
    if errs:
        return errs
    if meta["format"] != FORMAT:
        errs.append(f"metadata format: {meta['format']!r} is not {FORMAT!r}")
    if meta["format_version"] != FORMAT_VERSION:
        errs.append(f"metadata format_version: {meta['format_version']!r} unsupported")
    try:
        hp = _hyperparams(meta)
    except (ValueError, TypeError) as e:
        return errs + [f"metadata: {e}"]
    n = hp["n_classes"]
    try:
        names = json.loads(meta["class_names"])
        if not (isinstance(names, list) and len(names) == n
                and all(isinstance(s, str) for s in names)):
            errs.append(f"metadata class_names: need a JSON list of {n} strings")
        colors = json.loads(meta["class_colors"])
        if not (isinstance(colors, list) and len(colors) == n and all(
                isinstance(c, list) and len(c) == 3 and
                all(isinstance(x, int) and 0 <= x <= 255 for x in c) for c in colors)):
            errs.append(f"metadata class_colors: need a JSON list of {n} [r,g,b] (0..255)")
    except json.JSONDecodeError as e:
        errs.append(f"metadata class_names/class_colors: bad JSON ({e})")
    if meta["preprocess"] not in PREPROCESS:
        errs.append(f"metadata preprocess: {meta['preprocess']!r} not one of {PREPROCESS}")
    elif meta["preprocess"] == "standardize":
        for k in ("mean", "std"):
            try:
                v = json.loads(meta.get(k, ""))
                ok = isinstance(v, list) and len(v) == 3 and all(
                    isinstance(x, (int, float)) and math.isfinite(x) for x in v)
                if ok and k == "std":
                    ok = all(x > 0 for x in v)
            except json.JSONDecodeError:
                ok = False
            if not ok:
                errs.append(f"metadata {k}: need a JSON list of 3 finite numbers"
                            + (" > 0" if k == "std" else ""))
    if meta["input_layout"] != "NCHW":
        errs.append("metadata input_layout: only NCHW is defined")
    for k, conv in (("mpp", float), ("patch_size", int), ("size_multiple", int)):
        if k in meta:
            try:
                if conv(meta[k]) < 0:
                    raise ValueError
            except ValueError:
                errs.append(f"metadata {k}: {meta[k]!r} is not a number >= 0")
    return errs


def _hyperparams(meta):
    if meta.get("arch") == "maskrcnn":
        if maskrcnn_ref is None:
            raise ValueError("arch maskrcnn needs torchvision")
        return maskrcnn_ref.hyperparams(meta)
    return wsinn_ref.hyperparams(meta)


def _ref(meta):
    """The reference module family of an arch (build_model, exported_state)."""
    return maskrcnn_ref if meta.get("arch") == "maskrcnn" else wsinn_ref


def save_model(model, path, meta, dtype="F32"):
    """Writes the module's tensors (without num_batches_tracked) + metadata."""
    state = {k: v.detach().cpu().float().numpy()
             for k, v in _ref(meta).exported_state(model).items()}
    dtypes = {k: dtype for k in state} if dtype != "F32" else None
    safetensors_io.save(path, state, meta, dtypes)


def load_model(path, strict=True):
    """(module in eval mode, metadata). Verifies that the file holds exactly
    the tensors the architecture needs, with the right shapes."""
    tensors, meta, _ = safetensors_io.load(path)
    errs = check_metadata(meta)
    if errs:
        raise ValueError(f"{path}: " + "; ".join(errs))
    model = _ref(meta).build_model(meta)
    want = _ref(meta).exported_state(model)
    problems = []
    for k, v in want.items():
        if k not in tensors:
            problems.append(f"missing tensor {k} {tuple(v.shape)}")
        elif tuple(tensors[k].shape) != tuple(v.shape):
            problems.append(f"tensor {k}: shape {tuple(tensors[k].shape)}, "
                            f"expected {tuple(v.shape)}")
        elif not np.all(np.isfinite(tensors[k])):
            problems.append(f"tensor {k}: NaN or Inf values")
    for k in tensors:
        # a training checkpoint's optimiser state is not part of the model
        if k not in want and not k.startswith("__optim__."):
            problems.append(f"unexpected tensor {k}")
    if problems and strict:
        raise ValueError(f"{path}: " + "; ".join(problems))
    state = {k: torch.from_numpy(np.array(tensors[k], dtype=np.float32))
             for k in want if k in tensors}
    model.load_state_dict(state, strict=False)
    return model.eval(), meta

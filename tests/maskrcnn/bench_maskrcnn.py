#!/usr/bin/env python3
"""Timing (not a test): Mask R-CNN inference and a training step on the
engine (wsimrcnn_detect / wsimrcnn_train_step) vs torchvision 0.14 with the
same weights (resnet18-FPN, 3 classes), one image, torch threads = OMP threads.
Usage: bench_maskrcnn.py build/tests/maskrcnn/libmrcnn_ctypes.so [size] [repeats]"""
import ctypes as C
import os
import sys
import time

import numpy as np
import torch
from torchvision.models.detection.image_list import ImageList

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_parity as tp  # noqa: E402
import test_inference as ti  # noqa: E402
import test_train as tt  # noqa: E402

lib = tp.lib


def best(fn, reps):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main():
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    model, path = tp.make_model(3, seed=1)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(4.0)
    tp.safetensors_io.save(path, {k: v.numpy().astype(np.float32)
                                  for k, v in model.state_dict().items()}, {})
    cfg = tt.Config()
    lib.wsimrcnn_config_init(C.byref(cfg))
    cfg.spec.n_classes = 3
    m = lib.wsimrcnn_new(C.byref(cfg), tp.ERR, 512)
    for i in range(3):
        assert lib.mr_load(lib.wsimrcnn_net(m, i), path.encode(), tp.ERR, 512) == 0
    torch.manual_seed(2)
    x = torch.randn(1, 3, size, size)
    img = np.ascontiguousarray(x[0].permute(1, 2, 0).numpy())
    k = 100
    bufs = [np.zeros(k * 4, np.float32), np.zeros(k, np.float32), np.zeros(k, np.int32),
            np.zeros(k * 784, np.float32)]
    nd = [0]

    def eng():
        nd[0] = lib.wsimrcnn_detect(m, img.ctypes.data, size, size,
                                    *[b.ctypes.data for b in bufs], None, tp.ERR, 512)

    def ref():
        with torch.no_grad():
            images = ImageList(x, [(size, size)])
            f = model.backbone(x)
            p, _ = model.rpn(images, f)
            model.roi_heads(f, p, images.image_sizes)

    boxes, labels, masks = tt.targets(size, size)
    losses = tt.Losses()

    def eng_train():
        assert lib.wsimrcnn_train_step(m, img.ctypes.data, size, size, boxes.ctypes.data,
                                       labels.ctypes.data, masks.ctypes.data, 3,
                                       C.byref(losses), tp.ERR, 512) == 0, tp.ERR.value

    tg = [{"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels).long(),
           "masks": torch.from_numpy(masks).to(torch.uint8)}]

    def ref_train():
        model.train()
        model.zero_grad()
        images = ImageList(x, [(size, size)])
        f = model.backbone(x)
        p, l1 = model.rpn(images, f, tg)
        _, l2 = model.roi_heads(f, p, images.image_sizes, tg)
        sum({**l1, **l2}.values()).backward()
        model.eval()

    model.eval()
    te, tr = best(eng, reps), best(ref, reps)
    print(f"inference {size}x{size} ({nd[0]} detections): engine {te * 1e3:.0f} ms, "
          f"torchvision {tr * 1e3:.0f} ms ({tr / te:.2f}x)")
    te, tr = best(eng_train, reps), best(ref_train, reps)
    print(f"training step {size}x{size}: engine {te * 1e3:.0f} ms, torchvision {tr * 1e3:.0f} ms "
          f"({tr / te:.2f}x)")
    lib.wsimrcnn_free(m)
    os.remove(path)
    os.rmdir(os.path.dirname(path))


if __name__ == "__main__":
    main()

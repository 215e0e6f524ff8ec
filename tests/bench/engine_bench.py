"""PyTorch figures for tests/bench/engine_bench (same workloads, same FLOP
counts): 2 threads, eval, no_grad, best of NCHW and channels_last.
usage: engine_bench.py SOURCE_ROOT  -> one line per workload: name seconds"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(sys.argv[1], "models", "reference"))
import wsinn_ref  # noqa: E402

torch.set_num_threads(2)


def best_time(fn, reps):
    fn()
    best = 1e30
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench(name, model, shape, reps):
    model.eval()
    results = {}
    for fmt in ("nchw", "channels_last"):
        mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        m = model.to(memory_format=mf)
        x = torch.randn(*shape).to(memory_format=mf)
        with torch.no_grad():
            results[fmt] = best_time(lambda: m(x), reps)
    fmt = min(results, key=results.get)
    print(f"{name} {results[fmt]:.6f} {fmt}", flush=True)


torch.manual_seed(0)
conv = torch.nn.Conv2d(64, 64, 3, padding=1)
bench("conv3x3", conv, (1, 64, 256, 256), 5)
chain = torch.nn.Sequential(*[torch.nn.Conv2d(64, 64, 3, padding=1) for _ in range(8)])
bench("conv3x3x8", chain, (1, 64, 256, 256), 3)
unet = wsinn_ref.UNet(2, 4, 32)
bench("unet_b1", unet, (1, 3, 256, 256), 3)
bench("unet_b8", unet, (8, 3, 256, 256), 2)
fcn = wsinn_ref.FCN8s(2, "vgg")
bench("fcn8s_b1", fcn, (1, 3, 256, 256), 3)
bench("fcn8s_b8", fcn, (8, 3, 256, 256), 2)
deeplab = wsinn_ref.DeepLabV3(2, "resnet18")
bench("deeplab_b1", deeplab, (1, 3, 256, 256), 3)
bench("deeplab_b8", deeplab, (8, 3, 256, 256), 2)

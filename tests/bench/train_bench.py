"""PyTorch figures for tests/bench/train_bench: the same training step
(U-Net depth 4 base 32, batch 8, 256x256, 2 classes, cross-entropy, SGD
momentum 0.9), 2 threads, train mode, best of NCHW and channels_last.
usage: train_bench.py SOURCE_ROOT STEPS [BASE BATCH SIDE]
  -> "seconds_per_step format\""""
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(sys.argv[1], "models", "reference"))
import wsinn_ref  # noqa: E402

torch.set_num_threads(2)
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
base, batch, side = (int(a) for a in sys.argv[3:6]) if len(sys.argv) > 5 else (32, 8, 256)
torch.manual_seed(0)
x = torch.randn(batch, 3, side, side)
y = torch.randint(0, 2, (batch, side, side))
best = {}
for fmt in ("nchw", "channels_last"):
    mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    model = wsinn_ref.UNet(2, 4, base).to(memory_format=mf).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xf = x.to(memory_format=mf)
    times = []
    for s in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(model(xf), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    best[fmt] = min(times[1:])
fmt = min(best, key=best.get)
print(f"{best[fmt]:.4f} {fmt}", flush=True)

"""PyTorch reference implementations of the gst-wsiseg segmentation networks.

These modules define the tensor names and shapes of a model file
(docs/model-format.md). The C engine (models/engine/) mirrors them name by
name, so keep the module tree and attribute names stable.

Conventions shared by every architecture:
- input: N x 3 x H x W float32, RGB, already preprocessed; H and W multiples
  of size_multiple(meta) (32 is always enough);
- output of forward(): N x n_classes x H x W logits at the input size;
  predict() applies softmax (n_classes > 1) or sigmoid (n_classes == 1);
- every 3x3/7x7/1x1 convolution followed by BatchNorm has no bias; BatchNorm
  eps is 1e-5; padding keeps the size ("same"), = dilation * (k // 2).
"""
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = ("unet", "fcn8s", "deeplabv3")
ENCODERS = ("vgg", "resnet18", "resnet34")
BN_EPS = 1e-5
RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
VGG_BLOCKS = (2, 2, 3, 3, 3)


class ConvBNReLU(nn.Module):
    """conv (no bias) -> BatchNorm -> ReLU. Tensors: conv.weight, bn.*"""

    def __init__(self, cin, cout, k=3, stride=1, dilation=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride,
                              padding=dilation * (k // 2), dilation=dilation,
                              bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class DoubleConv(nn.Module):
    """Two 3x3 ConvBNReLU: conv1, conv2."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = ConvBNReLU(cin, cout, 3)
        self.conv2 = ConvBNReLU(cout, cout, 3)

    def forward(self, x):
        return self.conv2(self.conv1(x))


# ---------------------------------------------------------------- encoders

class VGGEncoder(nn.Module):
    """stages.{s}.{j} = ConvBNReLU 3x3; a 2x2/2 max-pool ends each stage
    unless the output stride would exceed output_stride (then the convs of
    the later stages are dilated by the product of the skipped pools).
    Stage widths: base_width * (1, 2, 4, 8, 8).
    forward() returns the output of every stage (after its pool)."""

    def __init__(self, base_width=32, blocks=VGG_BLOCKS, output_stride=32):
        super().__init__()
        widths = [base_width * m for m in (1, 2, 4, 8, 8)][:len(blocks)]
        self.pool_after = []
        self.stages = nn.ModuleList()
        cin, stride, dilation = 3, 1, 1
        for s, n in enumerate(blocks):
            layers = []
            for j in range(n):
                layers.append(ConvBNReLU(cin, widths[s], 3, dilation=dilation))
                cin = widths[s]
            self.stages.append(nn.Sequential(*layers))
            if stride * 2 <= output_stride:
                stride *= 2
                self.pool_after.append(True)
            else:
                dilation *= 2
                self.pool_after.append(False)
        self.channels = list(widths)

    def forward(self, x):
        feats = []
        for stage, pool in zip(self.stages, self.pool_after):
            x = stage(x)
            if pool:
                x = F.max_pool2d(x, 2, 2)
            feats.append(x)
        return feats


class BasicBlock(nn.Module):
    """conv1 3x3 (stride) -> bn1 -> relu -> conv2 3x3 -> bn2, + identity or
    downsample (0: 1x1 conv with the block's stride, 1: BatchNorm); relu.
    Both 3x3 convs use the layer's dilation."""

    def __init__(self, cin, cout, stride=1, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout, eps=BN_EPS))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + idt)


class ResNetEncoder(nn.Module):
    """torchvision-style names: conv1 (7x7/2, pad 3) bn1 relu, max-pool 3x3/2
    pad 1, layer1..layer4 of BasicBlocks, widths base_width * (1, 2, 4, 8),
    strides 1, 2, 2, 2. When output_stride is 16 (8), layer4 (layer3 and
    layer4) use stride 1 and dilation 2 (2 and 4) instead.
    forward() returns the outputs of layer1..layer4 (strides 4, 8, 16, 32)."""

    def __init__(self, name="resnet18", base_width=64, output_stride=32):
        super().__init__()
        blocks = RESNET_BLOCKS[name]
        widths = [base_width * m for m in (1, 2, 4, 8)]
        self.conv1 = nn.Conv2d(3, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width, eps=BN_EPS)
        cin, stride_now, dilation = base_width, 4, 1
        for i, (n, w) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            if stride == 2:
                if stride_now * 2 <= output_stride:
                    stride_now *= 2
                else:
                    stride, dilation = 1, dilation * 2
            layer = [BasicBlock(cin, w, stride, dilation)]
            layer += [BasicBlock(w, w, 1, dilation) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            cin = w
        self.channels = list(widths)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 3, 2, 1)
        feats = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            feats.append(x)
        return feats


def make_encoder(name, base_width=None, output_stride=32, vgg_blocks=VGG_BLOCKS):
    if name == "vgg":
        return VGGEncoder(base_width or 32, tuple(vgg_blocks), output_stride)
    if name in RESNET_BLOCKS:
        return ResNetEncoder(name, base_width or 64, output_stride)
    raise ValueError(f"unknown encoder {name!r} (known: {', '.join(ENCODERS)})")


def bilinear_kernel(channels, k):
    """Weights (channels, channels, k, k) of a per-channel bilinear upsampler."""
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    r = torch.arange(k, dtype=torch.float32)
    f = 1 - (r - center).abs() / factor
    w = torch.zeros(channels, channels, k, k)
    for c in range(channels):
        w[c, c] = f[:, None] * f[None, :]
    return w


# ------------------------------------------------------------------- archs

class SegModel(nn.Module):
    """Base: forward() gives logits, predict() probabilities."""

    n_classes = 1

    def predict(self, x):
        y = self.forward(x)
        return torch.sigmoid(y) if self.n_classes == 1 else torch.softmax(y, 1)


class UNet(SegModel):
    """down.{i} (i < depth): DoubleConv to base*2^i, then 2x2/2 max-pool;
    bottom: DoubleConv to base*2^depth;
    up.{i} (i < depth, deepest first, c = base*2^(depth-i)):
      upconv: ConvTranspose2d(c, c/2, 2, stride 2, bias),
      block: DoubleConv(c, c/2) on cat([skip, upconv(x)], channel dim);
    head: Conv2d(base, n_classes, 1, bias)."""

    def __init__(self, n_classes, depth=4, base_width=32):
        super().__init__()
        self.n_classes = n_classes
        self.down = nn.ModuleList()
        cin = 3
        for i in range(depth):
            self.down.append(DoubleConv(cin, base_width << i))
            cin = base_width << i
        self.bottom = DoubleConv(cin, base_width << depth)
        self.up = nn.ModuleList()
        for i in range(depth):
            c = base_width << (depth - i)
            m = nn.Module()
            m.upconv = nn.ConvTranspose2d(c, c // 2, 2, stride=2)
            m.block = DoubleConv(c, c // 2)
            self.up.append(m)
        self.head = nn.Conv2d(base_width, n_classes, 1)

    def forward(self, x):
        skips = []
        for d in self.down:
            x = d(x)
            skips.append(x)
            x = F.max_pool2d(x, 2, 2)
        x = self.bottom(x)
        for u, s in zip(self.up, reversed(skips)):
            x = u.block(torch.cat([s, u.upconv(x)], 1))
        return self.head(x)


class FCN8s(SegModel):
    """encoder features f8, f16, f32 (the last three encoder outputs);
    score8/score16/score32: Conv2d(c, n_classes, 1, bias);
    up32: ConvTranspose2d(n, n, 4, stride 2, pad 1, no bias), y = up32(s32) + s16;
    up16: same, y = up16(y) + s8;
    up8: ConvTranspose2d(n, n, 16, stride 8, pad 4, no bias) -> input size.
    The transposed convs start as bilinear upsamplers."""

    def __init__(self, n_classes, encoder="vgg", base_width=None,
                 vgg_blocks=VGG_BLOCKS):
        super().__init__()
        self.n_classes = n_classes
        self.encoder = make_encoder(encoder, base_width, 32, vgg_blocks)
        c8, c16, c32 = self.encoder.channels[-3:]
        n = n_classes
        self.score8 = nn.Conv2d(c8, n, 1)
        self.score16 = nn.Conv2d(c16, n, 1)
        self.score32 = nn.Conv2d(c32, n, 1)
        self.up32 = nn.ConvTranspose2d(n, n, 4, stride=2, padding=1, bias=False)
        self.up16 = nn.ConvTranspose2d(n, n, 4, stride=2, padding=1, bias=False)
        self.up8 = nn.ConvTranspose2d(n, n, 16, stride=8, padding=4, bias=False)
        with torch.no_grad():
            for m, k in ((self.up32, 4), (self.up16, 4), (self.up8, 16)):
                m.weight.copy_(bilinear_kernel(n, k))

    def forward(self, x):
        f8, f16, f32 = self.encoder(x)[-3:]
        y = self.up32(self.score32(f32)) + self.score16(f16)
        y = self.up16(y) + self.score8(f8)
        return self.up8(y)


class ASPP(nn.Module):
    """b0: ConvBNReLU 1x1; b1..b3: ConvBNReLU 3x3 dilation rates[0..2];
    pool: global average -> ConvBNReLU 1x1 -> broadcast to the feature size;
    project: ConvBNReLU 1x1 on cat([b0, b1, b2, b3, pool]) (5*w -> w)."""

    def __init__(self, cin, width, rates):
        super().__init__()
        self.b0 = ConvBNReLU(cin, width, 1)
        self.b1 = ConvBNReLU(cin, width, 3, dilation=rates[0])
        self.b2 = ConvBNReLU(cin, width, 3, dilation=rates[1])
        self.b3 = ConvBNReLU(cin, width, 3, dilation=rates[2])
        self.pool = ConvBNReLU(cin, width, 1)
        self.project = ConvBNReLU(5 * width, width, 1)

    def forward(self, x):
        g = self.pool(F.adaptive_avg_pool2d(x, 1))
        g = g.expand(-1, -1, x.shape[2], x.shape[3])
        y = torch.cat([self.b0(x), self.b1(x), self.b2(x), self.b3(x), g], 1)
        return self.project(y)


class DeepLabV3(SegModel):
    """encoder (dilated, output_stride 8 or 16) -> aspp -> head (ConvBNReLU
    3x3 w -> w) -> classifier (Conv2d(w, n_classes, 1, bias)) -> bilinear
    upsampling (align_corners=False) to the input size."""

    def __init__(self, n_classes, encoder="resnet18", base_width=None,
                 output_stride=16, aspp_width=256, aspp_rates=None,
                 vgg_blocks=VGG_BLOCKS):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError("output_stride must be 8 or 16")
        self.n_classes = n_classes
        if aspp_rates is None:
            aspp_rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.encoder = make_encoder(encoder, base_width, output_stride, vgg_blocks)
        self.aspp = ASPP(self.encoder.channels[-1], aspp_width, aspp_rates)
        self.head = ConvBNReLU(aspp_width, aspp_width, 3)
        self.classifier = nn.Conv2d(aspp_width, n_classes, 1)

    def forward(self, x):
        f = self.encoder(x)[-1]
        y = self.classifier(self.head(self.aspp(f)))
        return F.interpolate(y, size=x.shape[2:], mode="bilinear",
                             align_corners=False)


# ------------------------------------------------------------------ factory

def _json(meta, key, default):
    v = meta.get(key)
    if v is None or v == "":
        return default
    return json.loads(v) if isinstance(v, str) else v


def hyperparams(meta):
    """Normalised hyperparameters (python values) of a metadata dict whose
    values are strings (as in a model file) or already python values.
    Missing keys take the documented defaults."""
    arch = meta.get("arch", "")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r} (known: {', '.join(ARCHS)})")
    hp = {"arch": arch, "n_classes": int(_json(meta, "n_classes", 2))}
    if hp["n_classes"] < 1:
        raise ValueError("n_classes must be >= 1")
    if arch == "unet":
        hp["encoder"] = meta.get("encoder") or "unet"
        if hp["encoder"] != "unet":
            raise ValueError("unet supports only encoder 'unet' (its own blocks)")
        hp["depth"] = int(_json(meta, "depth", 4))
        hp["base_width"] = int(_json(meta, "base_width", 32))
    else:
        enc = meta.get("encoder") or ("vgg" if arch == "fcn8s" else "resnet18")
        if enc not in ENCODERS:
            raise ValueError(f"unknown encoder {enc!r} (known: {', '.join(ENCODERS)})")
        hp["encoder"] = enc
        hp["base_width"] = int(_json(meta, "base_width", 32 if enc == "vgg" else 64))
        if enc == "vgg":
            hp["vgg_blocks"] = [int(b) for b in _json(meta, "vgg_blocks", list(VGG_BLOCKS))]
            if len(hp["vgg_blocks"]) != 5:
                raise ValueError("vgg_blocks must list 5 stages")
    if arch == "deeplabv3":
        hp["output_stride"] = int(_json(meta, "output_stride", 16))
        hp["aspp_width"] = int(_json(meta, "aspp_width", 256))
        default_rates = [6, 12, 18] if hp["output_stride"] == 16 else [12, 24, 36]
        hp["aspp_rates"] = [int(r) for r in _json(meta, "aspp_rates", default_rates)]
        if len(hp["aspp_rates"]) != 3:
            raise ValueError("aspp_rates must list 3 rates")
    return hp


def size_multiple(meta):
    hp = hyperparams(meta)
    if hp["arch"] == "unet":
        return 1 << hp["depth"]
    return 32


def build_model(meta):
    """Builds the reference module described by metadata (see hyperparams)."""
    hp = hyperparams(meta)
    n = hp["n_classes"]
    if hp["arch"] == "unet":
        return UNet(n, hp["depth"], hp["base_width"])
    vb = tuple(hp.get("vgg_blocks", VGG_BLOCKS))
    if hp["arch"] == "fcn8s":
        return FCN8s(n, hp["encoder"], hp["base_width"], vb)
    return DeepLabV3(n, hp["encoder"], hp["base_width"], hp["output_stride"],
                     hp["aspp_width"], hp["aspp_rates"], vb)


def randomize_batchnorm(model, generator=None):
    """Gives every BatchNorm non-trivial statistics and affine parameters, so
    that tests of an inference engine exercise them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=generator) * 0.1)


def exported_state(model):
    """The tensors a model file holds: the state_dict without the BatchNorm
    num_batches_tracked counters (training bookkeeping, not weights)."""
    return {k: v for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


if __name__ == "__main__":
    import sys
    meta = dict(a.split("=", 1) for a in sys.argv[1:]) or {"arch": "unet"}
    m = build_model(meta).eval()
    for k, v in exported_state(m).items():
        print(k, tuple(v.shape))
    print("parameters:", sum(v.numel() for v in exported_state(m).values()),
          file=sys.stderr)

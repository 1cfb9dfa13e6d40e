"""Train and export the small test models used by onnxslim's tests and benchmarks.

Run from the repository root::

    python models/make_models.py

Everything is deterministic (fixed seeds, two CPU threads) and finishes in a
few minutes on two CPU cores.  The script writes, next to itself:

* ``digits_cnn.onnx``      plain CNN on 1x8x8 digits
* ``resnet_mini.onnx``     ResNet-style CNN (BasicBlocks) on 1x16x16 digits
* ``mobilenet_mini.onnx``  MobileNetV2-style CNN on 1x16x16 digits
* ``vit_tiny.onnx``        tiny ViT (2 encoder blocks) on 1x8x8 digits
* ``digits_eval.npz`` / ``digits_calib.npz``      8x8 data   (key ``input`` and ``labels``)
* ``digits16_eval.npz`` / ``digits16_calib.npz``  16x16 data (same convention)

All models take ``input`` [batch, 1, H, W] float32 (pixels scaled to [0, 1])
and return ``logits`` [batch, 10].  They are exported with the legacy
TorchScript exporter (``dynamo=False``), opset 17, dynamic batch dim "batch".
The BatchNormalization nodes of the ResNet and MobileNet models are kept as
separate nodes on purpose (the exporter would otherwise fuse them into Conv).
"""

from __future__ import annotations

import math
import random
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
OPSET = 17
REQUIRED_TORCH = "2.13.0"

SEED = 0
N_EVAL = 360
N_CALIB = 128


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def make_splits():
    """Stratified, seeded train / calib / eval split of the sklearn digits set."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N,1,8,8] in [0,1]
    y = digits.target.astype(np.int64)
    idx = np.arange(len(y))
    rest, ev = train_test_split(idx, test_size=N_EVAL, stratify=y, random_state=SEED)
    train, calib = train_test_split(rest, test_size=N_CALIB, stratify=y[rest], random_state=SEED)
    ev, calib, train = np.sort(ev), np.sort(calib), np.sort(train)
    assert not (set(ev) & set(calib)) and not (set(ev) & set(train)) and not (set(calib) & set(train))
    return x, y, train, calib, ev


def upsample16(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        t = F.interpolate(torch.from_numpy(x), size=(16, 16), mode="bilinear", align_corners=False)
    return t.clamp_(0.0, 1.0).numpy().astype(np.float32)


def augment(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero padding)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # [n,h]
    cols = (dx[:, None] + torch.arange(w)[None, :])  # [n,w]
    bidx = torch.arange(n)[:, None, None]
    out = padded[:, 0][bidx, rows[:, :, None], cols[:, None, :]]
    return out[:, None]


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


class DigitsCNN(nn.Module):
    """Conv-ReLU-Conv-ReLU-MaxPool-Conv-ReLU-MaxPool-Flatten-Linear-ReLU-Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 2x2
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetMini(nn.Module):
    """Stem conv + 4 BasicBlocks (64, 64, 128/2 with 1x1 projection, 128) + GAP + Linear."""

    def __init__(self, widths=(64, 128)) -> None:
        super().__init__()
        w1, w2 = widths
        self.stem = nn.Sequential(nn.Conv2d(1, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(w1, w1), BasicBlock(w1, w1))
        self.layer2 = nn.Sequential(BasicBlock(w1, w2, stride=2), BasicBlock(w2, w2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w2, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(self.flatten(self.pool(x)))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_res else out


class MobileNetMini(nn.Module):
    """MobileNetV2-style: stem, inverted residual blocks (depthwise 3x3), 1x1 head conv, GAP, Linear."""

    # (expand, cout, repeats, first stride)
    CFG = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 1), (4, 64, 2, 2)]

    def __init__(self) -> None:
        super().__init__()
        layers = [nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()]
        cin = 16
        for t, c, n, s in self.CFG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [nn.Conv2d(cin, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.fc(torch.flatten(x, 1))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTTiny(nn.Module):
    """Conv patch embedding (2x2 patches on 8x8 -> 16 tokens), cls token, pos embedding, 2 blocks."""

    def __init__(self, img: int = 8, patch: int = 2, dim: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: int = 2) -> None:
        super().__init__()
        n_patches = (img // patch) ** 2
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)
        nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, D]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


# ---------------------------------------------------------------------------
# Training / export / verification
# ---------------------------------------------------------------------------


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, wd: float,
          shift: int, batch: int = 64, label_smoothing: float = 0.0, seed: int = SEED) -> None:
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    steps_per_epoch = math.ceil(len(xt) / batch)
    total = epochs * steps_per_epoch
    warmup = steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
    )
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch):
            bi = perm[i:i + batch]
            xb = xt[bi]
            if shift:
                xb = augment(xb, shift, gen)
            loss = F.cross_entropy(model(xb), yt[bi], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def export(model: nn.Module, sample: torch.Tensor, path: Path, *, keep_bn: bool) -> None:
    model.eval()
    kwargs = dict(
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
        export_params=True,
    )
    if keep_bn:
        # TrainingMode.EVAL (the default) runs an "eval peephole" that folds
        # BatchNormalization into the preceding Conv.  PRESERVE keeps the module
        # in its current (eval) mode but skips that fusion, so BN nodes survive
        # as inference-mode BatchNormalization nodes.
        kwargs.update(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (sample,), str(path), **kwargs)


def op_counts(path: Path) -> Counter:
    import onnx

    m = onnx.load(str(path))
    return Counter(n.op_type for n in m.graph.node)


def verify(model: nn.Module, path: Path, x_eval: np.ndarray, y_eval: np.ndarray) -> float:
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    assert m.graph.input[0].name == "input" and m.graph.output[0].name == "logits"
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer
    ), "external data"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    model.eval()
    for bs in (1, 7):
        xb = x_eval[:bs]
        (got,) = sess.run(["logits"], {"input": xb})
        with torch.no_grad():
            ref = model(torch.from_numpy(xb)).numpy()
        assert got.shape == (bs, 10), got.shape
        err = float(np.abs(got - ref).max())
        assert err <= 1e-4, f"{path.name}: batch {bs}: max abs diff {err}"
    (logits,) = sess.run(["logits"], {"input": x_eval})
    return float((logits.argmax(1) == y_eval).mean())


def torch_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def main() -> int:
    if not torch.__version__.startswith(REQUIRED_TORCH):
        print(f"warning: torch {torch.__version__} (expected {REQUIRED_TORCH}); "
              "the exported graphs may differ from the committed ones", file=sys.stderr)
    torch.set_num_threads(2)
    seed_everything(SEED)
    t_start = time.time()

    x, y, tr, ca, ev = make_splits()
    x16 = upsample16(x)
    np.savez_compressed(HERE / "digits_eval.npz", input=x[ev], labels=y[ev])
    np.savez_compressed(HERE / "digits_calib.npz", input=x[ca], labels=y[ca])
    np.savez_compressed(HERE / "digits16_eval.npz", input=x16[ev], labels=y[ev])
    np.savez_compressed(HERE / "digits16_calib.npz", input=x16[ca], labels=y[ca])
    print(f"data: train={len(tr)} calib={len(ca)} eval={len(ev)}")

    specs = [
        # name, constructor, 16x16?, keep BN, training kwargs, min accuracy
        ("digits_cnn", DigitsCNN, False, False, dict(epochs=30, lr=3e-3, wd=1e-4, shift=1), 0.95),
        ("resnet_mini", ResNetMini, True, True, dict(epochs=15, lr=3e-3, wd=1e-4, shift=2), 0.90),
        ("mobilenet_mini", MobileNetMini, True, True, dict(epochs=30, lr=5e-3, wd=1e-4, shift=2), 0.90),
        ("vit_tiny", ViTTiny, False, False,
         dict(epochs=120, lr=2e-3, wd=0.05, shift=1, label_smoothing=0.1), 0.90),
    ]
    results = []
    for name, ctor, big, keep_bn, tkw, min_acc in specs:
        t0 = time.time()
        seed_everything(SEED)
        model = ctor()
        xs = x16 if big else x
        train(model, xs[tr], y[tr], **tkw)
        t_train = time.time() - t0
        path = HERE / f"{name}.onnx"
        export(model, torch.from_numpy(xs[ev[:2]]), path, keep_bn=keep_bn)
        acc = verify(model, path, xs[ev], y[ev])
        t_acc = torch_accuracy(model, xs[ev], y[ev])
        ops = op_counts(path)
        n_params = sum(p.numel() for p in model.parameters())
        size = path.stat().st_size
        print(f"{name}: params={n_params} size={size / 1e3:.1f}kB train {t_train:.1f}s "
              f"acc(ort)={acc:.4f} acc(torch)={t_acc:.4f}")
        print(f"  ops: {dict(sorted(ops.items()))}")
        assert size < 5_000_000, f"{name} too large"
        assert acc >= min_acc, f"{name}: accuracy {acc:.4f} < {min_acc}"
        if keep_bn:
            assert ops["BatchNormalization"] > 0, f"{name}: BatchNormalization nodes were fused"
        if name == "vit_tiny":
            assert ops["MatMul"] > 0 and ops["Add"] > 0 and ops["Softmax"] > 0
        results.append((name, acc))
    print(f"total time {time.time() - t_start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

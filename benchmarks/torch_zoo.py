"""Export small torch models of common architectures to ONNX, for the cleanup benchmark.

Run from the repository root::

    python benchmarks/torch_zoo.py [FOLDER] [--only resnet gpt ...]

FOLDER defaults to benchmarks/out/zoo/ (git-ignored). Each architecture is built with
seeded random weights (BatchNorm statistics included, so folding them changes numbers)
and exported with the TorchScript exporter (``dynamo=False``, dynamic batch dim "batch")
at opsets 11, 13 and 17, or 14 and 17 for the attention models that need opset 14, as
``<arch>_op<opset>.onnx``. The models are untrained: they exist to give the graph
cleanup the node patterns real exports have (BatchNorm, hardswish, SE gates, channel
shuffle, windowed attention, scaled_dot_product_attention, tied embeddings, GRU, ...).

``zoo.json`` in FOLDER lists every model ("shapes": input name -> shape to check it at,
batch 2; "vocab": the exclusive upper bound of integer inputs, else null) and whether
all architectures are there ("complete"; false after a partial ``--only`` run).
The output is the same bytes on every run with the same torch version; all exports
take well under a minute on two CPU cores. torch is an optional extra:
``pip install torch==2.13.0``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:
    sys.exit("torch_zoo.py needs torch, an optional extra: pip install torch==2.13.0")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FOLDER = ROOT / "benchmarks" / "out" / "zoo"
MANIFEST = "zoo.json"
OPSETS = (11, 13, 17)
ATTENTION_OPSETS = (14, 17)  # nn.MultiheadAttention and scaled_dot_product_attention need opset 14
CHECK_BATCH = 2
VOCAB = 100
IMAGE = (3, 64, 64)


# ---------------------------------------------------------------------------
# Shared blocks
# ---------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1,
            activation: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv2d (no bias) + BatchNorm2d (+ activation), padding keeping the size at stride 1."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, activation()) if activation else nn.Sequential(*layers)


def pool_flatten(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


class SqueezeExcite(nn.Module):
    """Global average pool, 1x1 reduce, activation, 1x1 expand, gate, scale."""

    def __init__(self, channels: int, *, hard: bool, reduction: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.expand = nn.Conv2d(channels // reduction, channels, 1)
        self.activation = nn.ReLU() if hard else nn.SiLU()
        self.gate = nn.Hardsigmoid() if hard else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.activation(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * self.gate(self.expand(scale))


# ---------------------------------------------------------------------------
# Convolutional networks
# ---------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride=stride)
        self.conv2 = conv_bn(cout, cout, activation=None)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, activation=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem + max pool, three BasicBlocks (two with 1x1 projection shortcuts), pool, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, stride=2), nn.MaxPool2d(3, 2, 1))
        self.blocks = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(pool_flatten(self.blocks(self.stem(x))))


class InvertedResidual(nn.Module):
    """1x1 expand, depthwise conv, optional squeeze-excite, 1x1 project, residual at stride 1."""

    def __init__(self, cin: int, hidden: int, cout: int, kernel: int, stride: int, *,
                 squeeze: bool, hard: bool) -> None:
        super().__init__()
        activation = nn.Hardswish if hard else nn.SiLU
        self.expand = conv_bn(cin, hidden, 1, activation=activation)
        self.depthwise = conv_bn(hidden, hidden, kernel, stride, groups=hidden, activation=activation)
        self.squeeze = SqueezeExcite(hidden, hard=hard) if squeeze else nn.Identity()
        self.project = conv_bn(hidden, cout, 1, activation=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.squeeze(self.depthwise(self.expand(x))))
        return x + out if self.residual else out


class MobileNetV3(nn.Module):
    """Hardswish stem, inverted residuals with hardsigmoid squeeze-excite, Linear-Hardswish-Dropout head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, stride=2, activation=nn.Hardswish)
        self.blocks = nn.Sequential(
            InvertedResidual(16, 32, 16, 3, 1, squeeze=True, hard=True),
            InvertedResidual(16, 48, 24, 3, 2, squeeze=False, hard=True),
            InvertedResidual(24, 72, 24, 5, 1, squeeze=True, hard=True),
            InvertedResidual(24, 96, 40, 5, 2, squeeze=True, hard=True),
        )
        self.head = nn.Sequential(nn.Linear(40, 64), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(pool_flatten(self.blocks(self.stem(x))))


class EfficientNet(nn.Module):
    """SiLU stem, MBConv blocks with sigmoid squeeze-excite, 1x1 top conv, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, stride=2, activation=nn.SiLU)
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 16, 3, 1, squeeze=True, hard=False),
            InvertedResidual(16, 64, 24, 3, 2, squeeze=True, hard=False),
            InvertedResidual(24, 96, 24, 3, 1, squeeze=True, hard=False),
            InvertedResidual(24, 96, 40, 3, 2, squeeze=True, hard=False),
        )
        self.top = conv_bn(40, 64, 1, activation=nn.SiLU)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(pool_flatten(self.top(self.blocks(self.stem(x)))))


class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1-BN-ReLU-Conv3x3 on the concatenation of all earlier features."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.layers(torch.cat(features, 1))


class DenseStage(nn.Module):
    def __init__(self, cin: int, growth: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DenseLayer(cin + index * growth, growth) for index in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    """Two dense stages (growth 8) joined by a BN-ReLU-Conv1x1-AvgPool transition."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.stage1 = DenseStage(16, 8, 3)
        self.transition = nn.Sequential(nn.BatchNorm2d(40), nn.ReLU(), nn.Conv2d(40, 20, 1, bias=False), nn.AvgPool2d(2))
        self.stage2 = DenseStage(20, 8, 3)
        self.norm = nn.BatchNorm2d(44)
        self.fc = nn.Linear(44, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.transition(self.stage1(self.stem(x))))
        return self.fc(pool_flatten(F.relu(self.norm(x))))


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn(cin, cout), conv_bn(cout, cout))


class UNet(nn.Module):
    """Encoder-decoder with skip concatenations; ConvTranspose2d and bilinear/nearest resizes; two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.encode1, self.encode2, self.encode3 = double_conv(3, 8), double_conv(8, 16), double_conv(16, 32)
        self.up = nn.ConvTranspose2d(32, 16, 2, 2)
        self.decode2, self.decode1 = double_conv(32, 16), double_conv(24, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip1 = self.encode1(x)
        skip2 = self.encode2(F.max_pool2d(skip1, 2))
        bottom = self.encode3(F.max_pool2d(skip2, 2))
        decoded = self.decode2(torch.cat([self.up(bottom), skip2], 1))
        upsampled = F.interpolate(decoded, size=skip1.shape[-2:], mode="bilinear", align_corners=False)
        mask = self.head(self.decode1(torch.cat([upsampled, skip1], 1)))
        coarse = F.interpolate(F.avg_pool2d(mask, 2), scale_factor=2, mode="nearest")
        return mask, coarse


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch, channels, height, width = x.shape
    x = x.reshape(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: split (stride 1) or two strided branches, concat, channel shuffle."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        half = channels // 2
        self.stride = stride
        self.branch = nn.Sequential(
            conv_bn(channels if stride == 2 else half, half, 1),
            conv_bn(half, half, 3, stride, groups=half, activation=None),
            conv_bn(half, half, 1),
        )
        if stride == 2:
            self.shortcut = nn.Sequential(conv_bn(channels, channels, 3, 2, groups=channels, activation=None),
                                          conv_bn(channels, half, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            kept, transformed = x.chunk(2, 1)
            out = torch.cat([kept, self.branch(transformed)], 1)
        else:
            out = torch.cat([self.shortcut(x), self.branch(x)], 1)
        return channel_shuffle(out, 2)


class ShuffleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 24, stride=2)
        self.units = nn.Sequential(ShuffleUnit(24, 1), ShuffleUnit(24, 2), ShuffleUnit(24, 1), ShuffleUnit(24, 1))
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.units(self.stem(x)).mean((2, 3)))


class ChannelsLastNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (permute, normalize, permute back)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, channels-last LayerNorm, Linear-GELU-Linear, layer scale, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.layer_scale = nn.Parameter(torch.full((channels,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer_scale * self.mlp(self.norm(self.depthwise(x).permute(0, 2, 3, 1)))
        return x + out.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 4), ChannelsLastNorm(16))
        self.stage1 = nn.Sequential(ConvNeXtBlock(16), ConvNeXtBlock(16))
        self.downsample = nn.Sequential(ChannelsLastNorm(16), nn.Conv2d(16, 32, 2, 2))
        self.stage2 = ConvNeXtBlock(32)
        self.norm = nn.LayerNorm(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.downsample(self.stage1(self.stem(x))))
        return self.fc(self.norm(x.mean((2, 3))))


# ---------------------------------------------------------------------------
# Attention networks
# ---------------------------------------------------------------------------


class WindowBlock(nn.Module):
    """Swin block on NHWC input: (shifted) window partition, attention with a relative bias, MLP."""

    def __init__(self, dim: int, window: int, heads: int, *, shifted: bool) -> None:
        super().__init__()
        self.window, self.heads, self.shifted = window, heads, shifted
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.position_bias = nn.Parameter(torch.randn(heads, window * window, window * window) * 0.02)

    def attend(self, windows: torch.Tensor) -> torch.Tensor:
        count, tokens, dim = windows.shape
        head_dim = dim // self.heads
        qkv = self.qkv(windows).reshape(count, tokens, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]
        scores = (query * head_dim ** -0.5) @ key.transpose(-2, -1) + self.position_bias
        out = (scores.softmax(-1) @ value).transpose(1, 2).reshape(count, tokens, dim)
        return self.proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, dim = x.shape
        size, shift = self.window, self.window // 2
        out = self.norm1(x)
        if self.shifted:
            out = torch.roll(out, (-shift, -shift), (1, 2))
        out = out.view(batch, height // size, size, width // size, size, dim).permute(0, 1, 3, 2, 4, 5)
        out = self.attend(out.reshape(-1, size * size, dim))
        out = out.view(batch, height // size, width // size, size, size, dim).permute(0, 1, 3, 2, 4, 5)
        out = out.reshape(batch, height, width, dim)
        if self.shifted:
            out = torch.roll(out, (shift, shift), (1, 2))
        x = x + out
        return x + self.mlp(self.norm2(x))


class Swin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 32, 4, 4)
        self.blocks = nn.Sequential(WindowBlock(32, 4, 2, shifted=False), WindowBlock(32, 4, 2, shifted=True))
        self.norm = nn.LayerNorm(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.patch_embed(x).permute(0, 2, 3, 1))
        return self.fc(self.norm(x).mean((1, 2)))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: nn.MultiheadAttention or qkv + scaled_dot_product_attention."""

    def __init__(self, dim: int, heads: int, *, sdpa: bool) -> None:
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        if sdpa:
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        else:
            self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        if not self.sdpa:
            return self.attention(x, x, x, need_weights=False)[0]
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attend(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """8x8 patches (64 tokens) + cls token + position embedding, two encoder blocks, cls head."""

    def __init__(self, *, sdpa: bool) -> None:
        super().__init__()
        dim = 48
        self.patch_embed = nn.Conv2d(3, dim, 8, 8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.position = nn.Parameter(torch.randn(1, 65, dim) * 0.02)
        self.blocks = nn.Sequential(EncoderBlock(dim, 4, sdpa=sdpa), EncoderBlock(dim, 4, sdpa=sdpa))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.position
        return self.fc(self.norm(self.blocks(x))[:, 0])


class DecoderBlock(nn.Module):
    """GPT-2 block: causal self-attention (masked_fill with -inf) and a tanh-GELU MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))

    def attend(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        query, key, value = (part.view(batch, tokens, self.heads, dim // self.heads).transpose(1, 2)
                             for part in self.qkv(x).split(dim, 2))
        scores = (query @ key.transpose(-2, -1)) / math.sqrt(dim // self.heads)
        scores = scores.masked_fill(causal[:tokens, :tokens] == 0, float("-inf"))
        return self.proj((scores.softmax(-1) @ value).transpose(1, 2).reshape(batch, tokens, dim))

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        x = x + self.attend(self.norm1(x), causal)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Token + position embeddings, two decoder blocks, LM head tied to the token embedding."""

    def __init__(self, context: int = 32, dim: int = 48) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, dim)
        self.positions = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList([DecoderBlock(dim, 4), DecoderBlock(dim, 4)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB, bias=False)
        self.head.weight = self.tokens.weight
        self.register_buffer("causal", torch.tril(torch.ones(context, context)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x, self.causal)
        return self.head(self.norm(x))


# ---------------------------------------------------------------------------
# Other modalities and heads
# ---------------------------------------------------------------------------


class AudioGRU(nn.Module):
    """Strided Conv1d + BatchNorm1d front end on a waveform, GRU, per-frame Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.frontend = nn.Sequential(
            nn.Conv1d(1, 16, 9, 2, 4), nn.BatchNorm1d(16), nn.ReLU(),
            nn.Conv1d(16, 32, 5, 2, 2), nn.BatchNorm1d(32), nn.ReLU(),
        )
        self.gru = nn.GRU(32, 32, batch_first=True)
        self.fc = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, _ = self.gru(self.frontend(x).transpose(1, 2))
        return self.fc(frames)


class Video3d(nn.Module):
    """Conv3d-BatchNorm3d-ReLU, MaxPool3d, Conv3d-BatchNorm3d-ReLU, global pool, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(8, 16, 3, padding=1), nn.BatchNorm3d(16), nn.ReLU(),
        )
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool3d(self.features(x), 1).flatten(1))


class NormNet(nn.Module):
    """Image-to-image: InstanceNorm, GroupNorm + SiLU, nearest upsample, tanh, input residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.instance_norm = nn.Conv2d(3, 16, 3, padding=1), nn.InstanceNorm2d(16, affine=True)
        self.conv2, self.group_norm = nn.Conv2d(16, 32, 3, 2, 1), nn.GroupNorm(4, 32)
        self.conv3 = nn.Conv2d(32, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.instance_norm(self.conv1(x)))
        out = F.silu(self.group_norm(self.conv2(out)))
        return torch.tanh(self.conv3(F.interpolate(out, scale_factor=2, mode="nearest"))) + x


class YoloHead(nn.Module):
    """SiLU backbone, two detection scales decoded in-graph: sigmoid, grid offsets, anchors, concat."""

    ANCHORS = ((10.0, 13.0, 16.0, 30.0, 33.0, 23.0), (30.0, 61.0, 62.0, 45.0, 59.0, 119.0))
    STRIDES = (8, 16)

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.anchor_count, self.outputs = 3, 5 + classes
        self.backbone = nn.Sequential(conv_bn(3, 16, stride=2, activation=nn.SiLU),
                                      conv_bn(16, 32, stride=2, activation=nn.SiLU))
        self.scales = nn.ModuleList([conv_bn(32, 32, stride=2, activation=nn.SiLU),
                                     conv_bn(32, 32, stride=2, activation=nn.SiLU)])
        self.detect = nn.ModuleList([nn.Conv2d(32, self.anchor_count * self.outputs, 1) for _ in self.STRIDES])
        self.register_buffer("anchors", torch.tensor(self.ANCHORS).view(2, 1, 3, 1, 1, 2))

    def decode(self, index: int, features: torch.Tensor) -> torch.Tensor:
        raw = self.detect[index](features)
        batch, _, height, width = raw.shape
        pred = raw.view(batch, self.anchor_count, self.outputs, height, width).permute(0, 1, 3, 4, 2).sigmoid()
        rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        grid = torch.stack((cols, rows), 2).view(1, 1, height, width, 2).float()
        centers = (pred[..., :2] * 2 - 0.5 + grid) * self.STRIDES[index]
        sizes = (pred[..., 2:4] * 2) ** 2 * self.anchors[index]
        return torch.cat([centers, sizes, pred[..., 4:]], -1).view(batch, -1, self.outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, boxes = self.backbone(x), []
        for index, scale in enumerate(self.scales):
            features = scale(features)
            boxes.append(self.decode(index, features))
        return torch.cat(boxes, 1)


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """How to build one architecture and what it takes: input name -> shape without batch."""

    build: Callable[[], nn.Module]
    inputs: dict[str, tuple[int, ...]]
    opsets: tuple[int, ...] = OPSETS
    outputs: tuple[str, ...] = ("output",)
    vocab: int | None = None  # integer inputs take values in [0, vocab)


ARCHS: dict[str, Arch] = {
    "resnet": Arch(ResNet, {"input": IMAGE}),
    "mobilenetv3": Arch(MobileNetV3, {"input": IMAGE}),
    "efficientnet": Arch(EfficientNet, {"input": IMAGE}),
    "densenet": Arch(DenseNet, {"input": IMAGE}),
    "unet": Arch(UNet, {"input": IMAGE}, outputs=("mask", "coarse")),
    "shufflenet": Arch(ShuffleNet, {"input": IMAGE}),
    "convnext": Arch(ConvNeXt, {"input": IMAGE}),
    "swin": Arch(Swin, {"input": IMAGE}),
    "vit_mha": Arch(lambda: ViT(sdpa=False), {"input": IMAGE}, ATTENTION_OPSETS),
    "vit_sdpa": Arch(lambda: ViT(sdpa=True), {"input": IMAGE}, ATTENTION_OPSETS),
    "gpt": Arch(GPT, {"input_ids": (16,)}, outputs=("logits",), vocab=VOCAB),
    "audio_gru": Arch(AudioGRU, {"input": (1, 400)}),
    "video3d": Arch(Video3d, {"input": (3, 8, 32, 32)}),
    "normnet": Arch(NormNet, {"input": IMAGE}),
    "yolo_head": Arch(YoloHead, {"input": IMAGE}),
}


def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so that folding them is visible in the outputs."""
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            module.running_mean.uniform_(-0.2, 0.2, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.uniform_(-0.2, 0.2, generator=generator)


def build(arch: Arch) -> nn.Module:
    torch.manual_seed(0)
    model = arch.build()
    randomize_batchnorm(model, torch.Generator().manual_seed(1))
    return model.eval()


def sample_inputs(arch: Arch, batch: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(2)
    if arch.vocab:
        return tuple(torch.randint(0, arch.vocab, (batch, *shape), generator=generator) for shape in arch.inputs.values())
    return tuple(torch.randn(batch, *shape, generator=generator) for shape in arch.inputs.values())


def export(model: nn.Module, arch: Arch, opset: int) -> bytes:
    """The ONNX bytes of ``model`` at ``opset``, batch dim dynamic on every input and output."""
    buffer = io.BytesIO()
    dynamic = {name: {0: "batch"} for name in (*arch.inputs, *arch.outputs)}
    # Not under torch.no_grad(): nn.MultiheadAttention would take its fused fast path, which has no ONNX export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the legacy exporter's deprecation notice
        torch.onnx.export(model, sample_inputs(arch, 1), buffer, input_names=list(arch.inputs),
                          output_names=list(arch.outputs), dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    return buffer.getvalue()


def write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


def export_zoo(folder: Path, names: list[str]) -> dict[str, dict]:
    """Export ``names`` at their opsets into ``folder``; return the manifest entries {model name: entry}."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for arch_name in names:
        arch = ARCHS[arch_name]
        model = build(arch)
        shapes = {name: [CHECK_BATCH, *shape] for name, shape in arch.inputs.items()}
        for opset in arch.opsets:
            path = folder / f"{arch_name}_op{opset}.onnx"
            write_if_changed(path, export(model, arch, opset))
            entries[path.stem] = {"file": path.name, "arch": arch_name, "opset": opset, "shapes": shapes,
                                  "vocab": arch.vocab}
            print(f"{path.stem:22s} {path.stat().st_size / 1e3:8.1f} kB", flush=True)
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER, help="output folder (default: %(default)s)")
    parser.add_argument("--only", nargs="+", choices=sorted(ARCHS), metavar="ARCH", help="only these architectures")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    entries = export_zoo(args.folder, args.only or list(ARCHS))
    manifest_path = args.folder / MANIFEST
    if args.only and manifest_path.exists():  # keep the other architectures' entries
        previous = json.loads(manifest_path.read_text())
        if previous.get("torch") == torch.__version__:
            entries = {**previous["models"], **entries}
    complete = {entry["arch"] for entry in entries.values()} == set(ARCHS)
    manifest = {"torch": torch.__version__, "complete": complete, "models": dict(sorted(entries.items()))}
    write_if_changed(manifest_path, (json.dumps(manifest, indent=1) + "\n").encode())
    print(f"{len(entries)} models in {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

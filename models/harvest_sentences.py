"""Harvests English sentences from documentation that ships with installed packages (no download).

Sources, read as text (nothing is imported): docstrings of the Python standard library and of
numpy / scipy / onnx / torch (parsed with ``ast``), and the *.txt / *.rst / *.md files in
site-packages (licenses, readmes). Sentences are kept when they look like prose: 6-30 words,
start with a capital letter, end with a period, no code characters, mostly letters. They are
deduplicated (case-insensitive), and a deterministic hash order picks ``--count`` of them.

    python models/harvest_sentences.py [--count 4000] [--out models/.real/minilm_corpus.txt]

The output is not committed: the sentences are other projects' text. ``models/make_minilm.py``
runs this on first use and splits the result into calibration and held-out evaluation
sentences. ``harvest_quotes`` adds general English from the Debian ``fortunes`` package when it
is installed (also written to git-ignored ``models/.real/`` only).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
import sysconfig
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
PACKAGES = ("numpy", "scipy", "onnx", "torch", "sklearn")
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODE = re.compile(r"[`_=<>{}\[\]|#*\\@~^$]|::|\.\.|>>>|http|www\.|\(\)")
_MAX_FILE_BYTES = 400_000


def sources() -> Iterator[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = Path(sysconfig.get_paths()["purelib"])
    yield from sorted(p for p in stdlib.glob("*.py"))
    yield from sorted(p for sub in ("email", "json", "http", "logging", "concurrent", "asyncio", "unittest", "xml")
                      for p in (stdlib / sub).rglob("*.py"))
    for package in PACKAGES:
        yield from sorted(p for p in (site / package).rglob("*.py") if "test" not in p.parts[-2])
    yield from sorted(p for ext in ("txt", "rst", "md") for p in site.rglob(f"*.{ext}"))


def texts(path: Path) -> Iterator[str]:
    """Docstrings of a .py file, or the whole text of a documentation file, as paragraphs."""
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            return
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    if path.suffix == ".py":
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)))]
        docs = [ast.get_docstring(n) for n in nodes]
        text = "\n\n".join(d for d in docs if d)
    yield from re.split(r"\n\s*\n", text)


def sentences(paragraph: str) -> Iterator[str]:
    lines = paragraph.splitlines()
    if any(line.startswith(("    ", "\t", ">>>", "..")) for line in lines) or any(set(line.strip()) <= set("-=~^*") for line in lines):
        return  # code, doctests, section underlines
    flat = " ".join(line.strip() for line in lines)
    for sentence in _SPLIT.split(flat):
        if _prose(sentence):
            yield sentence


def _prose(sentence: str) -> bool:
    words = sentence.split()
    if not 6 <= len(words) <= 30 or not sentence[0].isupper() or not sentence.endswith(".") or _CODE.search(sentence):
        return False
    letters = sum(c.isalpha() or c == " " for c in sentence)
    if letters < 0.92 * len(sentence) or not sentence.isascii():
        return False
    return sum(w.isupper() and len(w) > 1 for w in words) <= 2  # no shouting license clauses


def harvest(count: int) -> list[str]:
    seen, found = set(), []
    for path in sources():
        for paragraph in texts(path):
            for sentence in sentences(paragraph):
                key = sentence.lower()
                if key not in seen:
                    seen.add(key)
                    found.append(sentence)
    found.sort(key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    return found[:count]


FORTUNES = Path("/usr/share/games/fortunes")
"""Quotations of the Debian package ``fortunes`` (``apt-get install fortunes``): general English
(literature, people, wisdom, humour), a second kind of prose beside the documentation."""
FORTUNE_FILES = ("art cookie education food fortunes goedel humorists kids law literature love magic medicine "
                 "miscellaneous news people pets platitudes riddles science songs-poems sports wisdom work").split()


def harvest_quotes(count: int, folder: Path = FORTUNES) -> list[str]:
    """Prose sentences of the fortune files (entries separated by ``%`` lines, attributions
    dropped), filtered, deduplicated and ordered like ``harvest``; empty when not installed."""
    seen, found = set(), []
    for name in FORTUNE_FILES:
        path = folder / name
        if not path.is_file():
            continue
        for entry in re.split(r"^%\s*$", path.read_text(encoding="utf-8", errors="replace"), flags=re.M):
            lines = [line.strip() for line in entry.splitlines() if line.strip() and not line.lstrip().startswith("--")]
            for sentence in _SPLIT.split(" ".join(lines)):
                if _prose(sentence) and sentence.lower() not in seen:
                    seen.add(sentence.lower())
                    found.append(sentence)
    found.sort(key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    return found[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=HERE / ".real" / "minilm_corpus.txt")
    args = parser.parse_args()
    chosen = harvest(args.count)
    args.out.write_text("\n".join(chosen) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(chosen)} sentences, {args.out.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()

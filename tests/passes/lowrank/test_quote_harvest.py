"""The general-English calibration text of the MiniLM benchmark: sentences from fortune files."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "models"))

from harvest_sentences import harvest_quotes  # noqa: E402

WISDOM = """A fool and his money are soon parted, and the rest of us wait our turn.
	-- Someone Famous
%
Never put off until tomorrow what you can do the day after tomorrow.
%
def f(x): return x[0]  # code is dropped
%
a fool and his money are soon parted, and the rest of us wait our turn.
%
Too short.
"""


def test_quotes_are_prose_sentences_without_attributions_or_duplicates(tmp_path):
    (tmp_path / "wisdom").write_text(WISDOM, encoding="utf-8")
    (tmp_path / "unlisted").write_text("This file is not one of the harvested fortune files at all.\n", encoding="utf-8")
    quotes = harvest_quotes(10, tmp_path)
    assert sorted(quotes) == ["A fool and his money are soon parted, and the rest of us wait our turn.",
                              "Never put off until tomorrow what you can do the day after tomorrow."]
    assert harvest_quotes(1, tmp_path) == quotes[:1] and harvest_quotes(10, tmp_path) == quotes  # deterministic order
    assert harvest_quotes(10, tmp_path / "missing") == []

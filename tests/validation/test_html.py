"""The HTML report is self-contained and loads in a real headless browser with its plots."""

from __future__ import annotations

import re
import subprocess

import pytest

from onnxslim import api
from onnxslim.validation.html import render_html
from tests.validation.conftest import CHROMIUM, DIGITS, DIGITS_DATA, scale_weight

PLOTS = 5  # rel L2 and max abs per output, error along the graph, latency, size


@pytest.fixture(scope="module")
def failing_report(tmp_path_factory):
    broken = tmp_path_factory.mktemp("html") / "broken.onnx"
    scale_weight(DIGITS, broken, 1)
    return api.validate(DIGITS, broken, data=str(DIGITS_DATA), latency_runs=6, latency_warmup=1)


def test_html_has_every_plot_and_no_network(failing_report):
    page = render_html(failing_report)
    assert page.count('<svg class="plot"') == PLOTS
    assert not re.search(r"(src|href)=|https?://", page)
    assert "Divergence starts at /features/features.2/Conv_output_0" in page and "FAILED" in page


def test_html_without_latency_or_capture_says_why(tmp_path):
    page = render_html(api.validate(DIGITS, DIGITS))
    assert "latency not measured" in page and "no intermediate tensors captured" in page and "PASSED" in page


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no headless browser: apt-get install -y chromium")
def test_html_loads_in_chromium_without_console_errors(failing_report, tmp_path):
    path = tmp_path / "report.html"
    api.validate(DIGITS, DIGITS, html=str(path), capture="always", latency_runs=3)
    for page in (path, _write(tmp_path / "failing.html", failing_report)):
        done = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                               "--v=0", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        body = re.search(r"<body[^>]*>", done.stdout).group(0)
        assert f'data-plots="{PLOTS}"' in body and 'data-schema="onnxslim.validate/1"' in body, body
        assert "data-errors" not in body
        assert ":CONSOLE" not in done.stderr, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def _write(path, report):
    from onnxslim.validation.html import write_html

    return write_html(report, path)


def test_a_skipped_validation_is_not_reported_as_a_bare_pass():
    from onnxslim.validation.result import ValidationReport

    page = render_html(ValidationReport(passed=True, outputs=[], samples=0, skipped="input 'x' dim 1 is dynamic"))
    assert "PASSED, NOT VALIDATED" in page and "dim 1 is dynamic" in page

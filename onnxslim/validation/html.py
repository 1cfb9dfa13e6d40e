"""A self-contained HTML report: tables, inline-SVG plots and the JSON report, no network needed."""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path

from onnxslim import io
from onnxslim.validation.compare import OutputComparison
from onnxslim.validation.result import ValidationReport
from onnxslim.validation.svg import bar_chart, line_chart

STYLE = """body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:980px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.fail{color:#cc3311;font-weight:bold}.ok{color:#228833;font-weight:bold}.skip{color:#b8860b;font-weight:bold}
svg text{font:12px system-ui,sans-serif}svg .title{font-weight:bold;font-size:13px}svg .axis{fill:#666}
.note{color:#666}"""

# Counts the plots and any script error into data attributes, so a headless browser test can read them.
SCRIPT = """window.addEventListener('error',function(){var b=document.body;b.dataset.errors=1+(+b.dataset.errors||0);});
document.addEventListener('DOMContentLoaded',function(){var d=JSON.parse(document.getElementById('report-data').textContent);
document.body.dataset.plots=document.querySelectorAll('svg.plot').length;document.body.dataset.schema=d.schema;});"""


def write_html(report: ValidationReport, path: str | os.PathLike) -> Path:
    """Writes atomically (temporary file, then rename)."""
    return io.write_text(path, render_html(report), what="HTML report")


def render_html(report: ValidationReport) -> str:
    verdict = '<span class="ok">PASSED</span>' if report.passed else '<span class="fail">FAILED</span>'
    if report.passed and report.skipped:
        verdict = f'<span class="skip">PASSED, NOT VALIDATED</span> ({escape(report.skipped)})'
    data = json.dumps(report.to_dict()).replace("</", "<\\/")
    body = [f"<h1>onnxslim validation: {verdict}</h1>",
            f'<p>{report.samples} samples from {escape(report.data)}; {report.seconds:.2f} s. {_tolerances(report)}</p>',
            *(_provider(run) for run in report.providers), _failures(report), _accuracy(report),
            "<h2>Error per output</h2>", _error_plot(report), "<h2>Error along the graph</h2>", _graph_plot(report),
            "<h2>Latency and size</h2>", _latency_plot(report), _size_plot(report)]
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>onnxslim validation</title>"
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>{''.join(body)}"
            f'<script type="application/json" id="report-data">{data}</script></body></html>')


def _tolerances(report: ValidationReport) -> str:
    tol = report.tolerances
    if tol is None:
        return ""
    why = f" (lossy: {escape(report.lossy_reason)})" if report.lossy_reason else ""
    return (f"Tolerances{why}: atol {tol.atol:g}, rtol {tol.rtol:g}, cosine &ge; {tol.min_cosine:g}, SNR &ge; {tol.min_snr:g} dB, "
            f"top-1 &ge; {tol.min_top1:g}.")


def _table(outputs: list[OutputComparison]) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("output", "max abs", "mean abs", "rel L2", "cosine", "SNR dB", "top-1", "non-finite", "result"))
    rows = []
    for o in outputs:
        top1 = "-" if o.top1 is None else f"{o.top1:.3f}"
        result = '<span class="ok">ok</span>' if o.passed else '<span class="fail">FAIL</span>'
        rows.append(f"<tr><td>{escape(o.name)}</td><td>{o.max_abs:.3g}</td><td>{o.mean_abs:.3g}</td><td>{o.rel_l2:.3g}</td>"
                    f"<td>{o.cosine:.6f}</td><td>{o.snr_db:.1f}</td><td>{top1}</td><td>{o.nonfinite}</td><td>{result}</td></tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _provider(run) -> str:
    if run.status == "skipped":
        return f'<h2>{run.provider}</h2><p class="note">skipped: {escape(run.reason or "")}</p>'
    parts = [f"<h2>{run.provider}</h2>", _table(run.outputs)]
    if run.cpu_nodes:
        parts.append(f"<p>{len(run.cpu_nodes)} node(s) handed back to CPU: {escape(', '.join(run.cpu_nodes))}</p>")
    if run.cross:
        parts.append(f"<h3>Same model, {run.provider} vs cpu (informational)</h3>{_table(run.cross)}")
    loc = run.localization
    if loc is not None and loc.first is not None:
        rows = "".join(f"<tr><td>{escape(t.name)}</td><td>{escape(t.op_type)}</td><td>{escape(t.node)}</td><td>{t.rel_l2:.3g}</td>"
                       f"<td>{t.max_abs:.3g}</td></tr>" for t in loc.offenders)
        parts.append(f'<p class="fail">Divergence starts at {escape(loc.first.name)} ({escape(loc.first.op_type)} '
                     f'{escape(loc.first.node)})</p><table><tr><th>tensor</th><th>op</th><th>node</th><th>rel L2</th>'
                     f"<th>max abs</th></tr>{rows}</table>")
    return "".join(parts)


def _failures(report: ValidationReport) -> str:
    lines = report.failures()
    return "<ul>" + "".join(f'<li class="fail">{escape(line)}</li>' for line in lines) + "</ul>" if lines else ""


def _accuracy(report: ValidationReport) -> str:
    acc = report.accuracy
    if not acc:
        return ""
    return (f"<p>Accuracy ({escape(acc['output'])}, {acc['samples']} labels): original {acc['original']:.2%}, "
            f"optimized {acc['optimized']:.2%}</p>")


def _error_plot(report: ValidationReport) -> str:
    rows = [(f"{run.provider}: {o.name}", o) for run in report.providers for o in run.outputs]
    if not rows:
        return '<p class="note">no outputs compared</p>'
    colors = ["#4477aa" if o.passed else "#cc3311" for _, o in rows]
    labels = [label for label, _ in rows]
    return (bar_chart("relative L2 error per output (log scale; red: failed)", labels, [o.rel_l2 for _, o in rows], log=True, colors=colors)
            + bar_chart("max abs error per output (log scale)", labels, [o.max_abs for _, o in rows], log=True, colors=colors))


def _graph_plot(report: ValidationReport) -> str:
    loc = report.localization
    if loc is None or not loc.curve:
        return '<p class="note">no intermediate tensors captured (outputs agreed, or capture off; use --capture always)</p>'
    marker = loc.curve.index(loc.first) if loc.first is not None else None
    labels = [f"{t.name} ({t.op_type})" for t in loc.curve]
    return line_chart("relative L2 error of shared intermediate tensors (red: beyond tolerance)", labels,
                      [t.rel_l2 for t in loc.curve], [t.diverged for t in loc.curve], marker=marker)


def _latency_plot(report: ValidationReport) -> str:
    lat = report.latency
    if lat is None:
        return '<p class="note">latency not measured (use --latency RUNS)</p>'
    slower = ' <span class="fail">optimized but slower</span>' if lat.slower else ""
    note = f"<p>ratio {lat.ratio:.2f}x, noise band {lat.noise:.1%} ({lat.provider}, {lat.threads} threads){slower}</p>"
    return note + bar_chart("median latency (ms)", [v.label for v in lat.variants], [v.median_ms for v in lat.variants], unit=" ms")


def _size_plot(report: ValidationReport) -> str:
    if not report.sizes:
        return ""
    labels = list(report.sizes)
    return bar_chart("model size (MB)", labels, [report.sizes[k] / 1e6 for k in labels], unit=" MB")

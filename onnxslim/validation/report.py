"""Terminal rendering of a ValidationReport (rich). Only the CLI calls this, through onnxslim.render."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from onnxslim.validation.compare import OutputComparison
from onnxslim.validation.localize import Localization
from onnxslim.validation.result import ProviderRun, ValidationReport


def num(value: float | None, fmt: str = ".3g") -> str:
    if value is None:
        return "-"
    return format(value, fmt)


def validation_table(report: ValidationReport, run: ProviderRun | None = None) -> Table:
    outputs = run.outputs if run else report.outputs
    where = f", {run.provider}" if run else ""
    return _output_table(f"Validation ({report.samples} samples{where})", outputs)


def _output_table(title: str, outputs: list[OutputComparison]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("output", "max abs", "mean abs", "rel L2", "cosine", "SNR dB", "top-1", "top-5", "non-finite", "result"):
        table.add_column(column, justify="left" if column == "output" else "right")
    for out in outputs:
        table.add_row(escape(out.name), num(out.max_abs), num(out.mean_abs), num(out.rel_l2), num(out.cosine, ".6f"),
                      num(out.snr_db, ".1f"), num(out.top1, ".3f"), num(out.top5, ".3f"), str(out.nonfinite),
                      "ok" if out.passed else "FAIL", style=None if out.passed else "red")
    return table


def localization_table(loc: Localization) -> Table:
    table = Table(title=f"Where outputs diverge ({loc.compared} shared tensors compared, graph order)", title_justify="left")
    for column in ("#", "tensor", "op", "node", "rel L2", "max abs"):
        table.add_column(column, justify="right" if column in ("#", "rel L2", "max abs") else "left")
    for t in loc.offenders:
        table.add_row(str(t.index), escape(t.name), t.op_type, escape(t.node), num(t.rel_l2), num(t.max_abs),
                      style="bold red" if t is loc.first else None)
    return table


def print_validation(console: Console, report: ValidationReport) -> None:
    if report.skipped:
        console.print(f"[yellow]validation skipped:[/] {escape(report.skipped)}")
    for run in report.providers:
        _print_provider(console, report, run)
    if report.accuracy:
        acc = report.accuracy
        console.print(f"accuracy ({escape(acc['output'])}, {acc['samples']} labels): original {acc['original']:.2%}, "
                      f"optimized {acc['optimized']:.2%}")
    _print_sizes_latency(console, report)
    if report.tolerances is not None and report.providers:
        console.print(tolerances_line(report), highlight=False)
    for line in report.failures():
        console.print(f"[red]{escape(line)}[/]")


def tolerances_line(report: ValidationReport) -> str:
    """Which tolerances judged the outputs, and why the lossy ones (a pass that shows that it passed
    under looser ones must say so where it is read, not only in the JSON)."""
    tol = report.tolerances
    parts = [] if math.isinf(tol.atol) or math.isinf(tol.rtol) else [f"atol {tol.atol:g} + rtol {tol.rtol:g} x |ref|"]
    parts += [f"cosine >= {tol.min_cosine:g}", f"SNR >= {tol.min_snr:g} dB", f"top-1 >= {tol.min_top1:g}"]
    kind = f"lossy ({report.lossy_reason})" if report.lossy and report.lossy_reason else "lossy" if report.lossy else "lossless"
    off = "; no elementwise check" if not parts[0].startswith("atol") else ""
    return f"tolerances: {kind}: {', '.join(parts)}{off}"


def _print_provider(console: Console, report: ValidationReport, run: ProviderRun) -> None:
    if run.status == "skipped":
        console.print(f"[yellow]{run.provider}: skipped:[/] {escape(run.reason or '')}")
        return
    console.print(validation_table(report, run))
    if run.cpu_nodes:
        shown = ", ".join(run.cpu_nodes[:10]) + (" ..." if len(run.cpu_nodes) > 10 else "")
        console.print(f"{run.provider}: {len(run.cpu_nodes)} node(s) handed back to CPU: {escape(shown)}")
    if run.cross:
        console.print(_output_table(f"Same model, {run.provider} vs cpu (informational)", run.cross))
    if run.localization and run.localization.first:
        first = run.localization.first
        console.print(f"[red]divergence starts at {escape(first.name)} ({first.op_type} {escape(first.node)})[/]")
        console.print(localization_table(run.localization))


def _print_sizes_latency(console: Console, report: ValidationReport) -> None:
    from onnxslim.render import human_bytes

    sizes = report.sizes
    if sizes.get("original"):
        ratio = sizes["optimized"] / sizes["original"]
        console.print(f"size: {human_bytes(sizes['original'])} -> {human_bytes(sizes['optimized'])} ({ratio:.2f}x)")
    lat = report.latency
    if lat is None:
        return
    batch = f", batch {lat.batch}" if lat.batch else ""
    table = Table(title=f"Latency ({lat.provider}, {lat.threads} threads{batch}, ms)", title_justify="left")
    for column in ("model", "median", "p90", "runs"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for v in lat.variants:
        table.add_row(v.label, f"{v.median_ms:.3f}", f"{v.p90_ms:.3f}", str(v.runs))
    console.print(table)
    note = "[red]optimized but slower[/]" if lat.slower else "within noise or faster"
    console.print(f"latency ratio {lat.ratio:.2f}x, noise band {lat.noise:.1%}: {note}")

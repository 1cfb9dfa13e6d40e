"""Terminal rendering of reports (rich). Only the CLI calls this."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from onnxslim.core.manager import PipelineReport
from onnxslim.validation import ValidationReport


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def pipeline_table(report: PipelineReport) -> Table:
    table = Table(title="Passes", title_justify="left")
    for column in ("pass", "status", "nodes", "params", "size", "time", "notes"):
        table.add_column(column, justify="right" if column in ("nodes", "params", "size", "time") else "left")
    for record in report.records:
        notes = escape(record.reason or "") or ", ".join(f"{k}={_fmt(v)}" for k, v in record.stats.items() if v)
        style = {"rolled-back": "red", "unchanged": "dim"}.get(record.status)
        table.add_row(
            record.name,
            record.status,
            f"{record.before.nodes} -> {record.after.nodes}",
            f"{record.after.params:,}",
            human_bytes(record.after.param_bytes),
            f"{record.seconds * 1000:.0f} ms",
            notes,
            style=style,
        )
    table.add_row(
        "total", "", f"{report.before.nodes} -> {report.after.nodes}", f"{report.before.params:,} -> {report.after.params:,}",
        f"{human_bytes(report.before.param_bytes)} -> {human_bytes(report.after.param_bytes)}", "", "", style="bold",
    )
    return table


def validation_table(report: ValidationReport) -> Table:
    from onnxslim.validation.report import validation_table as table

    return table(report)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def print_result(console: Console, pipeline: PipelineReport | None, validation: ValidationReport | None, passed: bool) -> None:
    if pipeline is not None:
        console.print(pipeline_table(pipeline))
    if validation is not None:
        from onnxslim.validation.report import print_validation

        print_validation(console, validation)
    if passed and validation is not None and validation.skipped:  # a bare PASSED would read as checked
        console.print("[bold yellow]PASSED, NOT VALIDATED[/] (see the warning above)")
    else:
        console.print("[bold green]PASSED[/]" if passed else "[bold red]FAILED[/]")


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    io_table = Table(title="Inputs and outputs", title_justify="left")
    for column in ("kind", "name", "dtype", "shape"):
        io_table.add_column(column)
    for kind in ("inputs", "outputs"):
        for value in summary[kind]:
            shape = "unknown" if value["shape"] is None else "[" + ", ".join("?" if d is None else str(d) for d in value["shape"]) + "]"
            io_table.add_row(kind[:-1], escape(value["name"]), str(value["dtype"]), escape(shape))
    console.print(io_table)
    opsets = ", ".join(f"{d} {v}" for d, v in summary["opsets"].items())
    console.print(f"opsets: {opsets}   ir_version: {summary['ir_version']}   producer: {summary['producer'] or '-'}")
    console.print(f"nodes: {summary['nodes']}   params: {summary['params']:,} ({human_bytes(summary['param_bytes'])})")
    ops = Table(title="Ops", title_justify="left")
    ops.add_column("op type")
    ops.add_column("count", justify="right")
    for op, count in summary["op_types"].items():
        ops.add_row(op, str(count))
    console.print(ops)
    weights = Table(title="Parameters by dtype and largest initializers", title_justify="left")
    for column in ("name", "dtype", "shape", "size"):
        weights.add_column(column)
    for dtype, row in summary["params_by_dtype"].items():
        weights.add_row(f"(all {dtype})", dtype, f"{row['params']:,} params", human_bytes(row["bytes"]), style="bold")
    for w in summary["largest_initializers"]:
        weights.add_row(escape(w["name"]), w["dtype"], escape(str(w["shape"])), human_bytes(w["bytes"]))
    console.print(weights)


def print_passes(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(title="Passes (* = part of simplify, on by default)", title_justify="left")
    for column in ("name", "description", "settings"):
        table.add_column(column)
    for row in rows:
        settings = "\n".join(f"{s['name']}: {s['type']} = {s['default']!r}" for s in row["settings"]) or "-"
        table.add_row(row["name"] + (" *" if row["in_simplify"] else ""), escape(row["summary"]), escape(settings))
    console.print(table)

"""Rendering of a sensitivity scan (``ScanResult.to_dict()``): a terminal table and a self-contained HTML page."""

from __future__ import annotations

from html import escape

from rich.table import Table

from onnxslim.validation.svg import bar_chart


def _label(unit: dict) -> str:
    extra = len(unit["layers"]) - 1
    return unit["name"] + (f" (+{extra})" if extra else "")


def scan_table(scan: dict) -> Table:
    """One row per unit: parameters, then cosine (and accuracy) at each scanned amount, and the proposed amount."""
    proposal = scan.get("proposal") or {}
    chosen = proposal.get("amounts", {})
    table = Table(title=f"Pruning sensitivity ({scan['method']}): output cosine (accuracy) with one unit pruned")
    table.add_column("layer / group", overflow="fold")
    table.add_column("params", justify="right")
    for amount in scan["amounts"]:
        table.add_column(f"{amount:.0%}", justify="right")
    table.add_column("proposed", justify="right")
    for unit in scan["units"]:
        cells = []
        for point in unit["points"]:
            cell = f"{point['cosine']:.4f}"
            if point["accuracy"] is not None:
                cell += f" ({point['accuracy']:.1%})"
            cells.append(cell)
        amount = chosen.get(unit["layers"][0])
        table.add_row(_label(unit), str(unit["params"]), *cells, "-" if amount is None else f"{amount:.0%}")
    if proposal:
        table.caption = proposal_line(scan) + (f"\napply it: {proposal['command']}" if proposal.get("command") else "")
    return table


def proposal_line(scan: dict) -> str:
    p = scan["proposal"]
    text = (f"proposal: {p['param_reduction']:.1%} of the parameters removed, predicted cosine loss "
            f"{p['predicted_cosine_loss']:.4f}")
    if p.get("measured_cosine") is not None:
        text += f", measured cosine {p['measured_cosine']:.4f}"
    if p.get("measured_accuracy") is not None:
        text += f" (accuracy {p['measured_accuracy']:.2%}; unpruned {scan['baseline_accuracy']:.2%})"
    return text


def scan_html(scan: dict, *, title: str = "Pruning sensitivity scan") -> str:
    """A page with one bar chart per scanned amount (cosine loss per unit, log scale) and the proposal."""
    labels = [_label(u) for u in scan["units"]]
    charts = []
    for index, amount in enumerate(scan["amounts"]):
        losses = [max(1 - u["points"][index]["cosine"], 0.0) for u in scan["units"]]
        charts.append(bar_chart(f"1 - cosine with one unit pruned by {amount:.0%}", labels, losses, log=True))
    proposal = scan.get("proposal")
    overrides = ""
    if proposal:
        command = proposal.get("command") or (f"--prune 0 --prune-method {scan['method']} --prune-overrides "
                                              f"\"{','.join(proposal['overrides'])}\"")
        overrides = f"<h2>Proposal</h2><p>{escape(proposal_line(scan))}</p><pre>{escape(command, quote=False)}</pre>"
    style = "body{font:14px sans-serif;margin:2em} svg text{font-size:12px} .title{font-weight:bold}"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{style}</style>"
            f"</head><body><h1>{escape(title)}</h1><p>method {escape(scan['method'])}, {scan['params']} parameters, "
            f"{len(scan['units'])} units</p>{overrides}{''.join(charts)}</body></html>")

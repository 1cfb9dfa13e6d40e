"""Report row (``PassResult.details``) for one split weight."""

from __future__ import annotations

import numpy as np
from onnxslim.passes.lowrank import factorize
from onnxslim.passes.lowrank.allocate import Layer
from onnxslim.passes.lowrank.sites import Group


def report_row(group: Group, layer: Layer, rank: int, covariance: np.ndarray | None, whiten: bool) -> dict:
    """Report row for one split weight; errors are relative, on calibration outputs when data was given."""
    k, n = group.shape
    row = {"weight": group.name, "split": True, "op": "+".join(sorted({u.node.op_type for u in group.uses})),
           "uses": len(group.uses), "K": k, "N": n, "rank": rank, "params_before": k * n,
           "params_after": rank * (k + n), "params_saved": k * n - rank * (k + n),
           "method": "whitened" if whiten else "plain"}
    if covariance is None:
        row["weight_error"] = round(layer.factorization.relative_error(rank), 6)
        return row
    u, v = layer.factorization.factors(rank, np.float64)
    row["output_error"] = round(factorize.output_error(group.matrix, u @ v, covariance), 6)
    if whiten:
        pu, pv = factorize.plain(group.matrix).factors(rank, np.float64)
        row["plain_output_error"] = round(factorize.output_error(group.matrix, pu @ pv, covariance), 6)
    return row

"""Low-rank factorizations of one weight: plain SVD or SVD whitened by the input covariance.

A weight ``W`` (K x N, K contracted with the activation) is written ``W ~= U @ V`` with
``U`` (K x r) and ``V`` (r x N). Plain SVD minimizes ``||W - UV||``; the whitened form
minimizes ``||X (W - UV)||`` for the calibration activations ``X`` (rows of K values), using
only ``C = X^T X``: with ``S = C^(1/2)``, the SVD of ``S W`` truncated to r gives the best
rank-r output, and ``U = S^-1 P_r sqrt(s_r)``, ``V = sqrt(s_r) Q_r^T``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

_RANDOMIZED_OVERSAMPLE = 10
_ENERGY_RESOLUTION = 1e-6
_RANDOMIZED_POWER_ITERATIONS = 2
_METRIC_FLOOR = 1e-6


@dataclasses.dataclass
class Factorization:
    """``W ~= (left[:, :r] * s[:r]) @ right[:r]``; errors are measured in the factorization's own metric."""

    left: np.ndarray
    s: np.ndarray
    right: np.ndarray
    total_energy: float
    """Sum of all squared singular values (``||W||^2`` or ``||XW||^2``), also when only the top ones were computed."""
    whitened: bool

    @property
    def computed_rank(self) -> int:
        return len(self.s)

    def factors(self, rank: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """(U, V), with the singular values split evenly so that both factors have similar ranges."""
        root = np.sqrt(self.s[:rank])
        u = self.left[:, :rank] * root[None, :]
        v = root[:, None] * self.right[:rank]
        return u.astype(dtype), v.astype(dtype)

    def relative_error(self, rank: int) -> float:
        """``||W - UV|| / ||W||`` in this factorization's metric (output error when whitened)."""
        kept = float(np.sum(self.s[:rank].astype(np.float64) ** 2))
        return float(np.sqrt(max(self.total_energy - kept, 0.0) / self.total_energy)) if self.total_energy > 0 else 0.0

    def errors(self) -> np.ndarray:
        """Relative error at every rank 0..computed_rank (index = rank)."""
        kept = np.concatenate([[0.0], np.cumsum(self.s.astype(np.float64) ** 2)])
        total = max(self.total_energy, 1e-30)
        return np.sqrt(np.clip(total - kept, 0.0, None) / total)

    def rank_for_energy(self, energy: float) -> int:
        """Smallest rank whose singular values hold ``energy`` of the total squared energy.

        Energy is capped at 1 - 1e-6: float32 singular values leave a tail of rounding noise.
        """
        kept = np.cumsum(self.s.astype(np.float64) ** 2)
        target = min(energy, 1.0 - _ENERGY_RESOLUTION) * self.total_energy
        return int(min(np.searchsorted(kept, target) + 1, len(self.s)))


def plain(weight: np.ndarray, *, rank: int | None = None, randomized: bool = False, seed: int = 0) -> Factorization:
    """Truncated SVD of ``weight``; ``randomized`` computes only the top ``rank`` triplets."""
    w = weight.astype(np.float32)
    total = float(np.sum(w.astype(np.float64) ** 2))
    if randomized and rank is not None:
        p, s, qt = randomized_svd(w, rank, seed=seed)
    else:
        p, s, qt = _svd(w)
    return Factorization(p, s, qt, total, whitened=False)


def whitened(weight: np.ndarray, covariance: np.ndarray, *, damping: float,
             metric: np.ndarray | None = None, metric_damping: float = 0.0) -> Factorization:
    """SVD of ``C^(1/2) W``: truncation then minimizes the output error on the calibration activations.

    With ``metric`` (N x N, PSD), the output error is measured as ``||X (W - A) M^(1/2)||``: the SVD
    of ``C^(1/2) W M^(1/2)`` is truncated and ``M^(-1/2)`` is applied back to the right factor.
    """
    w = weight.astype(np.float64)
    root, inverse_root = _sqrt_and_inverse(covariance, damping)
    out_root, out_inverse = _metric_roots(metric, metric_damping, w.shape[1])
    p, s, qt = _svd(root @ w if out_root is None else root @ w @ out_root)
    total = float(np.sum(s.astype(np.float64) ** 2))
    return Factorization(inverse_root @ p, s, qt if out_inverse is None else qt @ out_inverse, total, whitened=True)


def refit(weight: np.ndarray, c_ss: np.ndarray, c_so: np.ndarray, *, damping: float,
          shift: np.ndarray | None = None, metric: np.ndarray | None = None, metric_damping: float = 0.0) -> Factorization:
    """Factors fitted to the original layer output from the split model's own inputs.

    Minimizes ``||X_s A - X_o W||^2 + lam ||A - W||^2`` over rank(A) <= r, from ``C_ss = X_s^T X_s``
    and ``C_so = X_s^T X_o`` alone (``lam = damping * mean(diag C_ss)``, the whitened mode's damping).
    With ``G = C_ss + lam I = S^2``, the objective is ``||S A - S^-1 M||^2 + const`` for
    ``M = C_so W + lam W``: truncating the SVD of ``S^-1 M`` to r gives the best A. With
    ``X_s = X_o`` this is exactly ``whitened``. ``shift`` (K x N, ``X_s^T D``) adds a residual
    correction ``D`` to the target: ``X_o W + D``. ``metric`` weights the output error as in ``whitened``.
    """
    w = weight.astype(np.float64)
    c = c_ss.astype(np.float64)
    lam = damping * (float(np.mean(np.diag(c))) or 1.0)
    values, vectors = np.linalg.eigh(c)  # C_ss may be an estimate that is not quite PSD: clipped at 0
    inverse_root = (vectors / np.sqrt(np.clip(values, 0.0, None) + max(lam, 1e-30))) @ vectors.T
    target = c_so.astype(np.float64) @ w + lam * w + (0.0 if shift is None else shift.astype(np.float64))
    out_root, out_inverse = _metric_roots(metric, metric_damping, w.shape[1])
    p, s, qt = _svd(inverse_root @ target if out_root is None else inverse_root @ target @ out_root)
    total = float(np.sum(s.astype(np.float64) ** 2))
    return Factorization(inverse_root @ p, s, qt if out_inverse is None else qt @ out_inverse, total, whitened=True)


def output_error(weight: np.ndarray, approx: np.ndarray, covariance: np.ndarray) -> float:
    """``||X (W - A)|| / ||X W||`` computed from ``C = X^T X`` alone."""
    w = weight.astype(np.float64)
    diff = w - approx.astype(np.float64)
    num = float(np.sum((covariance @ diff) * diff))
    den = float(np.sum((covariance @ w) * w))
    return float(np.sqrt(max(num, 0.0) / den)) if den > 0 else 0.0


def randomized_svd(matrix: np.ndarray, rank: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``rank`` SVD by a range finder with power iterations (Halko, Martinsson and Tropp 2011)."""
    rows, cols = matrix.shape
    width = min(rank + _RANDOMIZED_OVERSAMPLE, rows, cols)
    probe = np.random.default_rng(seed).standard_normal((cols, width)).astype(matrix.dtype)
    basis, _ = np.linalg.qr(matrix @ probe)
    for _ in range(_RANDOMIZED_POWER_ITERATIONS):
        basis, _ = np.linalg.qr(matrix.T @ basis)
        basis, _ = np.linalg.qr(matrix @ basis)
    p_small, s, qt = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    return (basis @ p_small)[:, :rank], s[:rank], qt[:rank]


def _svd(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD through the eigendecomposition of the smaller Gram matrix, in float64.

    Several times faster than LAPACK's gesdd on 2 cores for 768 x 3072 weights; singular values
    below ~1e-8 of the largest lose accuracy, far below any rank this pass keeps.
    """
    a = matrix.astype(np.float64)
    if a.shape[0] > a.shape[1]:
        q, s, pt = _svd(a.T)
        return pt.T, s, q.T
    values, vectors = np.linalg.eigh(a @ a.T)
    order = np.argsort(values)[::-1]
    s = np.sqrt(np.clip(values[order], 0.0, None))
    p = vectors[:, order]
    safe = np.where(s > s[0] * 1e-12, s, np.inf) if len(s) else s
    return p, s, (p.T @ a) / safe[:, None]


def _metric_roots(metric: np.ndarray | None, damping: float, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(M_d^(1/2), M_d^(-1/2))`` for ``M_d = M / mean(diag M) + damping I`` (eigenvalues floored at
    1e-6 of the mean), or ``(None, None)`` without a metric. The scale of M does not change the optimum."""
    if metric is None:
        return None, None
    m = metric.astype(np.float64)
    if m.shape != (n, n):
        raise ValueError(f"output metric of shape {m.shape} for a weight with {n} outputs")
    m = m / (float(np.mean(np.diag(m))) or 1.0)
    values, vectors = np.linalg.eigh((m + m.T) / 2 + damping * np.eye(n))
    values = np.clip(values, _METRIC_FLOOR, None)
    root = np.sqrt(values)
    return (vectors * root) @ vectors.T, (vectors / root) @ vectors.T


def _sqrt_and_inverse(covariance: np.ndarray, damping: float) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric square root of ``C + damping * mean(diag C) * I`` and its inverse."""
    c = covariance.astype(np.float64)
    scale = float(np.mean(np.diag(c))) or 1.0
    values, vectors = np.linalg.eigh(c + damping * scale * np.eye(len(c)))
    values = np.clip(values, damping * scale * 1e-3, None)
    root = np.sqrt(values)
    return (vectors * root) @ vectors.T, (vectors / root) @ vectors.T

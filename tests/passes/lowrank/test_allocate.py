"""Budget allocation: the Lagrangian solution, then the budget it leaves spent on rank raises."""

import numpy as np
from onnxslim.passes.lowrank import allocate as allocation
from onnxslim.passes.lowrank.allocate import Layer, allocate, max_rank
from onnxslim.passes.lowrank.factorize import Factorization


def layer(k: int, n: int, decay: float) -> Layer:
    s = np.exp(-np.arange(min(k, n)) / decay)
    fact = Factorization(np.eye(k)[:, :len(s)], s, np.eye(len(s), n), float(np.sum(s**2)), whitened=False)
    return Layer(k, n, fact, max_rank(k, n, 0.2))


def totals(layers, ranks):
    size = sum(l.params if r is None else l.split_params(r) for l, r in zip(layers, ranks))
    cost = sum(0.0 if r is None else float(l.costs(np.array([r]))[0]) for l, r in zip(layers, ranks))
    return size, cost


def test_the_budget_left_by_the_lagrangian_solution_is_spent(monkeypatch):
    layers = [layer(64, 64, 6.0), layer(64, 96, 12.0), layer(32, 48, 3.0), layer(96, 64, 20.0)]
    total = sum(l.params for l in layers)
    filled_any = False
    for keep in np.linspace(0.3, 0.8, 11):
        filled = allocate(layers, keep, 4)
        with monkeypatch.context() as patch:
            patch.setattr(allocation, "_fill", lambda options, chosen, budget: chosen)
            plain = allocate(layers, keep, 4)
        (size, cost), (plain_size, plain_cost) = totals(layers, filled), totals(layers, plain)
        assert plain_size <= size <= keep * total + 1e-6 and cost <= plain_cost + 1e-12
        assert [r is None for r in filled] == [r is None for r in plain]  # layers left whole stay whole
        filled_any |= size > plain_size and cost < plain_cost
    assert filled_any  # the relaxation left room somewhere, and filling it lowered the predicted loss


def test_extreme_budgets_split_everything_or_nothing():
    layers = [layer(64, 64, 6.0), layer(32, 48, 3.0)]
    assert allocate(layers, 1.0, 4) == [None, None]
    assert all(r is not None for r in allocate(layers, 0.05, 4))  # cannot be met: every layer at its cheapest

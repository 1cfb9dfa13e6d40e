"""Removal of operations that do nothing at inference time."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import MatchResult
from onnxscript.rewriter._rewrite_rule import RewriteRuleClassBase
from onnxscript.rewriter.rules.common import (
    cast_cast_rule,
    no_op_cast_rule,
    no_op_expand_rule,
    no_op_transpose_rule,
    reshape_reshape_rule,
    transpose_transpose_rule,
    unsqueeze_unsqueeze_rule,
)

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.stats import count_nodes
from onnxslim.passes._rewrite import apply_rules
from onnxslim.passes.cleanup.collapse_pairs import collapse_pairs
from onnxslim.passes.cleanup.infer_shapes import inferred_shapes
from onnxslim.passes._constants import fixed_tensor



class _InferenceDropout(RewriteRuleClassBase):
    """Dropout is the identity unless training_mode is true (its default is false)."""

    def pattern(self, op, x):
        return op.Dropout(x, _allow_other_inputs=True, _outputs=["out"])

    def check(self, context, x, out, **_) -> MatchResult:
        result = MatchResult()
        node = out.producer()
        if len(node.outputs) > 1 and node.outputs[1].uses():
            return result.fail("the dropout mask is read")
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            training = fixed_tensor(node.inputs[2])
            if training is None or bool(training.numpy()):
                return result.fail("training_mode is not a constant false")
        return result

    def rewrite(self, op, x, **_):
        return op.Identity(x)


class _NeutralOperand(RewriteRuleClassBase):
    """``x * 1``, ``x / 1``, ``x + 0``, ``x - 0`` with a constant (of ones or zeros, any shape) that
    cannot broadcast ``x`` to a larger shape."""

    op_type = "Mul"
    neutral = 1.0

    def pattern(self, op, x, c):
        return getattr(op, self.op_type)(x, c)

    def check(self, context, x, c, **_) -> MatchResult:
        result = MatchResult()
        tensor = fixed_tensor(c)
        if tensor is None or x.shape is None or x.dtype != c.dtype:
            return result.fail("operand not constant, or shape/dtype unknown")
        array = tensor.numpy()
        if not _within(array.shape, tuple(x.shape)) or not np.all(array == self.neutral):
            return result.fail("not a neutral constant of broadcast-safe shape")
        return result

    def rewrite(self, op, x, **_):
        return op.Identity(x)


def _within(const: tuple[int, ...], dims: tuple) -> bool:
    """A constant of shape ``const`` broadcasts to ``dims`` without enlarging it: no more axes, and
    each of its dims (right-aligned) 1 or the same static dim (LayerNorm's gamma of ones, ``[C]``)."""
    if len(const) > len(dims):
        return False
    return all(c == 1 or (isinstance(d, int) and c == d) for c, d in zip(reversed(const), reversed(dims)))


class _SameShapeReshape(RewriteRuleClassBase):
    """``Reshape(x, shape)`` whose constant target is x's own shape: each dim equal to x's, or 0
    (copy, without allowzero), and at most one -1 standing for the one dim left (torch's
    ``x.reshape(-1)`` of a 1-D tensor)."""

    def pattern(self, op, x, shape):
        return op.Reshape(x, shape, _allow_other_attributes=True, _outputs=["out"])

    def check(self, context, x, shape, out, **_) -> MatchResult:
        result = MatchResult()
        target = fixed_tensor(shape)
        if target is None or x.shape is None:
            return result.fail("target not constant, or the input's rank unknown")
        copy_ok = not out.producer().attributes.get_int("allowzero", 0)
        dims, wanted = list(x.shape), [int(d) for d in target.numpy().ravel()]
        if len(wanted) != len(dims):
            return result.fail("another rank")
        matched = [w == d if isinstance(d, int) else False for w, d in zip(wanted, dims)]
        copied = [w == 0 and copy_ok for w in wanted]
        rest = [i for i, (m, c) in enumerate(zip(matched, copied)) if not (m or c)]
        if len(rest) > 1 or (rest and wanted[rest[0]] != -1):
            return result.fail("not the input's own shape")
        return result

    def rewrite(self, op, x, **_):
        return op.Identity(x)


class _WhereOfNot(RewriteRuleClassBase):
    """``Where(Not(c), a, b)`` -> ``Where(c, b, a)`` (torch's masked_fill exports)."""

    def pattern(self, op, c, a, b):
        return op.Where(op.Not(c, _outputs=["negated"]), a, b)

    def check(self, context, c, a, b, negated, **_) -> MatchResult:
        result = MatchResult()
        if len(negated.uses()) != 1 or negated.is_graph_output():
            return result.fail("the negated condition is read elsewhere")
        return result

    def rewrite(self, op, c, a, b, **_):
        return op.Where(c, b, a)


_NEUTRAL_RULES = tuple(
    type(f"_{op}By{neutral:g}", (_NeutralOperand,), {"op_type": op, "neutral": neutral}).rule()
    for op, neutral in (("Mul", 1.0), ("Div", 1.0), ("Add", 0.0), ("Sub", 0.0))
)

_MAX_ROUNDS = 4
_RULES = (
    _InferenceDropout.rule(),
    no_op_cast_rule,
    no_op_expand_rule,
    no_op_transpose_rule,
    cast_cast_rule,
    reshape_reshape_rule,
    transpose_transpose_rule,
    unsqueeze_unsqueeze_rule,
    _SameShapeReshape.rule(),
    _WhereOfNot.rule(),
)


def flatten_concats(model: ir.Model) -> bool:
    """``Concat(a, Concat(b, c), d)`` on one axis -> ``Concat(a, b, c, d)`` when the inner Concat
    is read only there (torch's UNet skip connections, interpolate exports); whether any changed."""
    modified = False
    for node in list(model.graph):
        if node.op_type != "Concat" or node.domain not in ("", "ai.onnx") or node.graph is None:
            continue
        axis = node.attributes.get_int("axis", 0)
        inputs, spliced = [], False
        for value in node.inputs:
            inner = value.producer() if value is not None else None
            if (inner is not None and inner.op_type == "Concat" and inner.domain in ("", "ai.onnx")
                    and inner.graph is node.graph and inner.attributes.get_int("axis", 0) == axis
                    and len(value.uses()) == 1 and not value.is_graph_output()):
                inputs += list(inner.inputs)
                spliced = True
            else:
                inputs.append(value)
        if spliced:
            node.resize_inputs(len(inputs))
            for index, value in enumerate(inputs):
                node.replace_input_with(index, value)
            modified = True
    if modified:
        ir.passes.common.RemoveUnusedNodesPass()(model)
    return modified


_INITIAL_STATES = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}
"""Input positions of the initial hidden (and cell) state, whose default, when omitted, is zeros."""


def drop_zero_initial_states(model: ir.Model) -> bool:
    """An LSTM/GRU/RNN initial state built as zeros (torch's export: ConstantOfShape(0) of a shape
    computed from the input, or Expand of a zero) becomes the omitted input, whose default is the
    same zeros; the shape chain that built it then goes as dead code. Whether any changed."""
    modified = False
    for node in list(model.graph):
        if node.op_type not in _INITIAL_STATES or node.domain not in ("", "ai.onnx"):
            continue
        for index in _INITIAL_STATES[node.op_type]:
            if index < len(node.inputs) and _all_zeros(node.inputs[index]):
                node.replace_input_with(index, None)
                modified = True
        while node.inputs and node.inputs[-1] is None:  # trailing omitted inputs are left out
            node.resize_inputs(len(node.inputs) - 1)
    if modified:
        ir.passes.common.RemoveUnusedNodesPass()(model)
    return modified


def _all_zeros(value: ir.Value | None) -> bool:
    """Zeros whose shape is computed at run time (from the input, as the default's is). A constant
    zeros tensor is left: its fixed batch dim pins the batch the model takes (dropped, the model
    silently ran batches its original refused)."""
    producer = value.producer() if value is not None and not value.is_graph_input() else None
    if producer is None or producer.domain not in ("", "ai.onnx") or len(producer.inputs) < 1:
        return False
    if producer.op_type == "Slice":  # one layer's state cut from a stacked one (torch's multi-layer LSTM)
        axes = fixed_tensor(producer.inputs[3]) if len(producer.inputs) > 3 and producer.inputs[3] is not None else None
        return axes is not None and {int(a) for a in axes.numpy().ravel()} <= {0, -3} and _all_zeros(producer.inputs[0])
    shape = producer.inputs[-1] if producer.op_type == "Expand" else producer.inputs[0]
    if fixed_tensor(shape) is not None:
        return False
    if producer.op_type == "ConstantOfShape":
        fill = producer.attributes.get("value")
        return fill is None or not np.any(fill.as_tensor().numpy())
    if producer.op_type == "Expand":
        zeros = fixed_tensor(producer.inputs[0])
        return zeros is not None and not np.any(zeros.numpy())
    return False


def eliminate_identities(model: ir.Model) -> bool:
    """Removes Identity nodes in all graphs; whether any went.

    onnx-ir's IdentityEliminationPass renames ``x`` to ``y`` for ``y = Identity(x)`` when ``y`` is a
    graph output, so two outputs ``Identity(x)`` both ended up named after the second one, and an
    Identity inside a branch renamed the outer tensor it reads. Such an Identity stays here: it is
    removed only when its input is produced in the same graph and is not already an output.
    """
    modified = False
    for node in list(ir.traversal.RecursiveGraphIterator(model.graph)):
        if node.op_type != "Identity" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 1 \
                or len(node.outputs) != 1 or node.inputs[0] is None:
            continue
        source, target = node.inputs[0], node.outputs[0]
        renamed = target.is_graph_output()
        if renamed:
            producer = source.producer()
            if producer is None or producer.graph is not node.graph or source.is_graph_output():
                continue
            source.shape, source.type = target.shape or source.shape, target.type or source.type  # the contract's
        elif source.shape is None or source.type is None:
            source.shape, source.type = source.shape or target.shape, source.type or target.type
        ir.convenience.replace_all_uses_with(target, source, replace_graph_outputs=True)
        if renamed:
            source.name = target.name
        node.graph.remove(node, safe=True)
        modified = True
    return modified


class RemoveNoops(Pass):
    """Remove Identity, inference-mode Dropout, Cast to the same type, x+0, x*1 and merge repeated Reshape/Transpose.

    Before: ``Conv -> Identity -> Dropout -> Relu``. After: ``Conv -> Relu``. An Identity that
    produces a graph output is kept (the output's name is part of the contract).
    """

    name = "remove-noops"

    def call(self, model: ir.Model) -> PassResult:
        before = count_nodes(model)
        modified = False
        with inferred_shapes(model):  # the rules decide on dtypes and shapes
            for _ in range(_MAX_ROUNDS):  # merged Transposes become Identity, which the next round removes
                changed = eliminate_identities(model)
                changed |= flatten_concats(model)
                changed |= collapse_pairs(model)
                changed |= drop_zero_initial_states(model)
                changed |= apply_rules(model, _RULES).modified
                changed |= apply_rules(model, _NEUTRAL_RULES, commute=True).modified
                modified |= changed
                if not changed:
                    break
        return PassResult(model, modified=modified, stats={"nodes_removed": before - count_nodes(model)})

"""MatMul followed by a bias Add, turned into one Gemm where Gemm computes the same thing."""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import MatchResult
from onnxscript.rewriter._rewrite_rule import RewriteRuleClassBase

from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.passes._rewrite import apply_rules
from onnxslim.passes.cleanup.infer_shapes import inferred_shapes

_GEMM_TYPES = {ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16}


def _dims(value: ir.Value) -> tuple | None:
    return None if value.shape is None else tuple(value.shape)


def _same_dim(a, b) -> bool:
    """Equal static dims, or symbolic dims of one name; two unnamed dims may differ at run time
    (an ``[?, 8]`` bias against an ``[?, 16]`` input's rows broadcast the rows)."""
    if isinstance(a, int) or isinstance(b, int):
        return a == b
    return a.value is not None and a.value == b.value


class _MatMulAddToGemm(RewriteRuleClassBase):
    def pattern(self, op, a, b, c):
        return op.Add(op.MatMul(a, b), c)

    def check(self, context, a, b, c, **_) -> MatchResult:
        result = MatchResult()
        a_dims, b_dims, c_dims = _dims(a), _dims(b), _dims(c)
        if a_dims is None or b_dims is None or len(a_dims) != 2 or len(b_dims) != 2:
            return result.fail("Gemm needs 2-D MatMul inputs")
        if a.dtype not in _GEMM_TYPES or a.dtype != c.dtype:
            return result.fail(f"Gemm has no kernel for {a.dtype}")
        if c_dims is None or len(c_dims) > 2:
            return result.fail("bias rank unknown or above 2 (Add would broadcast to a higher rank)")
        m, n = a_dims[0], b_dims[1]
        # Gemm's C broadcasts one way only: to (M, N). Each bias dim must be 1 or equal the result's.
        expected = (n,) if len(c_dims) == 1 else (m, n)
        for got, want in zip(c_dims, expected):
            if got != 1 and not _same_dim(got, want):
                return result.fail(f"bias shape {list(c_dims)} does not broadcast one-way to [{m}, {n}]")
        return result

    def rewrite(self, op, a, b, c):
        return op.Gemm(a, b, c)


class FuseMatMulAdd(Pass):
    """Replace ``Add(MatMul(A, B), C)`` by ``Gemm(A, B, C)`` for 2-D A and B.

    Applies when the MatMul output has no other reader, the dtype has a Gemm kernel, and C
    broadcasts one way to the (M, N) result (so the output shape and values are unchanged).
    3-D activations (transformer Linear layers) are left as MatMul + Add.
    """

    name = "fuse-matmul-add"

    def call(self, model: ir.Model) -> PassResult:
        # the ranks come from inference: without it a Paddle classifier head (Reshape -> MatMul -> Add)
        # stayed MatMul + Add, which ORT fuses into a float Gemm after quantization dequantized its weight
        with inferred_shapes(model):
            result = apply_rules(model, (_MatMulAddToGemm.rule(),), commute=True)
        result.stats = {"gemms_created": result.stats["rewrites"], "nodes_removed": result.stats["nodes_removed"]}
        return result

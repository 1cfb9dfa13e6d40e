"""The pass implementations, installed as ``onnxslim.passes``. Registration is this explicit tuple."""

from onnxslim.passes.cleanup.eliminate_common_subexpressions import EliminateCommonSubexpressions
from onnxslim.passes.cleanup.fold_constants import FoldConstants
from onnxslim.passes.cleanup.fold_shape_chains import FoldShapeChains
from onnxslim.passes.cleanup.fuse_batchnorm import FuseBatchNorm
from onnxslim.passes.cleanup.fuse_conv_affine import FuseConvAffine
from onnxslim.passes.cleanup.fuse_hard_activations import FuseHardActivations
from onnxslim.passes.cleanup.fuse_matmul_add import FuseMatMulAdd
from onnxslim.passes.cleanup.infer_shapes import InferShapes
from onnxslim.passes.cleanup.remove_noops import RemoveNoops
from onnxslim.passes.cleanup.remove_unused import RemoveUnused

ALL_PASSES = (
    FoldConstants,
    FoldShapeChains,
    RemoveNoops,
    FuseBatchNorm,
    FuseConvAffine,
    FuseHardActivations,
    FuseMatMulAdd,
    EliminateCommonSubexpressions,
    RemoveUnused,
    InferShapes,
)

# What `simplify` (on by default) runs, in order. Folding runs again after the fusions,
# which expose new constant subgraphs.
SIMPLIFY_PIPELINE = (
    "fold-constants",
    "fold-shape-chains",
    "remove-noops",
    "fuse-conv-affine",
    "fuse-batchnorm",
    "fuse-conv-affine",
    "fuse-hard-activations",
    "fuse-matmul-add",
    "eliminate-common-subexpressions",
    "fold-constants",
    "remove-unused",
)

# Families whose CLI flags / API keywords append steps after the cleanup, in this order
# (pruning before low rank before quantization: each works on the previous one's weights).
FLAG_GROUPS = ()

__all__ = ["ALL_PASSES", "FLAG_GROUPS", "SIMPLIFY_PIPELINE"]

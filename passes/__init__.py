"""The pass implementations, installed as ``onnxslim.passes``. Registration is this explicit tuple."""

from onnxslim.passes.cleanup.eliminate_common_subexpressions import EliminateCommonSubexpressions
from onnxslim.passes.cleanup.expand_inner_softmax import ExpandInnerSoftmax
from onnxslim.passes.cleanup.fold_constants import FoldConstants
from onnxslim.passes.cleanup.fold_shape_chains import FoldShapeChains
from onnxslim.passes.cleanup.fuse_affine_conv import FuseAffineConv
from onnxslim.passes.cleanup.fuse_batchnorm import FuseBatchNorm
from onnxslim.passes.cleanup.fuse_conv_affine import FuseConvAffine
from onnxslim.passes.cleanup.fuse_hard_activations import FuseHardActivations
from onnxslim.passes.cleanup.fuse_matmul_add import FuseMatMulAdd
from onnxslim.passes.cleanup.infer_shapes import InferShapes
from onnxslim.passes.cleanup.remove_noops import RemoveNoops
from onnxslim.passes.cleanup.remove_unused import RemoveUnused
from onnxslim.passes.lowrank.flags import LOWRANK_FLAGS
from onnxslim.passes.lowrank.split_lowrank import SplitLowRank
from onnxslim.passes.pruning.flags import PRUNING_FLAGS
from onnxslim.passes.pruning.prune_channels import PruneChannels
from onnxslim.passes.pruning.prune_magnitude import PruneMagnitude
from onnxslim.passes.pruning.prune_nm import PruneNM
from onnxslim.passes.quantization.convert_fp16 import ConvertFp16
from onnxslim.passes.quantization.flags import QUANTIZATION_FLAGS
from onnxslim.passes.quantization.quantize_auto import QuantizeAuto
from onnxslim.passes.quantization.quantize_dynamic import QuantizeDynamic
from onnxslim.passes.quantization.quantize_static import QuantizeStatic
from onnxslim.passes.quantization.quantize_weights import QuantizeWeights

ALL_PASSES = (
    FoldConstants,
    FoldShapeChains,
    RemoveNoops,
    FuseBatchNorm,
    FuseConvAffine,
    FuseAffineConv,
    FuseHardActivations,
    FuseMatMulAdd,
    EliminateCommonSubexpressions,
    ExpandInnerSoftmax,
    RemoveUnused,
    InferShapes,
    PruneMagnitude,
    PruneNM,
    PruneChannels,
    SplitLowRank,
    QuantizeStatic,
    QuantizeDynamic,
    QuantizeAuto,
    QuantizeWeights,
    ConvertFp16,
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
    "fuse-affine-conv",  # after: an affine between two convs folds exactly into the one before
    "fuse-hard-activations",
    "fuse-matmul-add",
    "eliminate-common-subexpressions",
    "fold-constants",
    "remove-unused",
    # a second round: remove-unused merges equal initializers, after which subexpressions match
    # (4 identical Unsqueeze(Gather(shape), [0]) of a torch export) and shape chains fold further
    # (nn.TransformerEncoder 70 -> 62 nodes, onnxsim 68)
    "fold-shape-chains",
    "eliminate-common-subexpressions",
    "fold-constants",
    "remove-unused",
)

# Families whose CLI flags / API keywords append steps after the cleanup, in this order
# (pruning before low rank before quantization: each works on the previous one's weights).
FLAG_GROUPS = (PRUNING_FLAGS, LOWRANK_FLAGS, QUANTIZATION_FLAGS)

__all__ = ["ALL_PASSES", "FLAG_GROUPS", "SIMPLIFY_PIPELINE"]

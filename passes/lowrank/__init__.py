"""Low-rank splitting of constant MatMul/Gemm/1x1-Conv weights (plain and activation-aware)."""

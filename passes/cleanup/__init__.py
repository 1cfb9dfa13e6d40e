"""Graph cleanup: folding, dead code, no-ops, fusions, shape inference. Lossless."""

"""Quantization passes: static QDQ int8 with streamed calibration, dynamic int8 for MatMul/Gemm."""

"""quantize-auto runs the float model over the data as the user's (a failure: DataError) and its
quantized candidates as its own (a failure: RuntimeError, a rollback), like mixed precision."""

from onnxslim.passes.quantization import mixed_precision, quantize_auto
from onnxslim.passes.quantization.quantize_auto import QuantizeAuto
from tests.passes.quantization.test_float_matmul_outputs import _ffn
from tests.passes.quantization.util import context


def test_only_the_float_model_s_run_is_the_data_s(monkeypatch):
    runs, real = [], mixed_precision.run_outputs

    def spy(model, feeds, *, candidate=False):
        quantized = any(node.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") for node in model.graph)
        runs.append((quantized, candidate))
        return real(model, feeds, candidate=candidate)
    monkeypatch.setattr(mixed_precision, "run_outputs", spy)
    monkeypatch.setattr(quantize_auto, "time_round_robin",
                        lambda variants, inputs, **_: {label: [1.0] for label in variants})
    QuantizeAuto(context=context({"x": (4, 8, 32)}, count=4))(_ffn())
    assert sorted(runs) == [(False, False), (True, True), (True, True)], runs  # float; static and dynamic

"""Execution providers by short name, and why one cannot be used here."""

from __future__ import annotations

import onnxruntime as ort

from onnxslim.errors import ConfigError, OnnxSlimError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class ProviderUnavailable(OnnxSlimError):
    """A requested execution provider is missing from this ONNX Runtime build or failed to start."""

    exit_code = 1


def parse_providers(spec: str | None) -> list[str]:
    """``"cpu,cuda"`` -> ``["cpu", "cuda"]``; ``"all"`` -> every known provider (availability is checked later)."""
    names = [p.strip().lower() for p in (spec or "cpu").split(",") if p.strip()]
    if names == ["all"]:
        return list(PROVIDERS)
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown or not names:
        raise ConfigError(f"--providers: unknown provider(s) {', '.join(unknown) or '(none)'} (known: {', '.join(PROVIDERS)}, all)")
    return list(dict.fromkeys(names))


def unavailable_reason(name: str) -> str | None:
    """None when ``name`` can be asked for, else why not (checked again when a session starts)."""
    full = PROVIDERS[name]
    if full not in ort.get_available_providers():
        hint = " (install onnxruntime-gpu)" if name == "cuda" else ""
        return f"{full} is not in this onnxruntime build {ort.__version__}{hint}"
    return None

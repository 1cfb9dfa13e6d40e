"""Typed errors. Each carries what it concerns, so the CLI can print one line and pick the exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2


class OnnxSlimError(Exception):
    """Base class for errors the user can act on; the CLI prints them without a traceback."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, path: object | None = None, where: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.where = where
        super().__init__(self.one_line())

    def one_line(self) -> str:
        prefix = ""
        if self.path:
            prefix += f"{self.path}: "
        if self.where:
            prefix += f"{self.where}: "
        return prefix + self.message


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message: library errors can span pages."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def brief(exc: BaseException, limit: int = 240) -> str:
    """The message's non-empty lines on one line, cut at ``limit`` characters: ONNX Runtime puts
    the essential part of a shape error ("index: 0 Got: 8 Expected: 1") on its second line."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ModelLoadError(OnnxSlimError):
    """The model file is missing, is not ONNX, or is truncated."""


class ExternalDataError(ModelLoadError):
    """External data is missing or points outside the model's folder."""


class OutputPathError(OnnxSlimError):
    """The output path would overwrite the input or cannot be written."""


class RecipeError(OnnxSlimError):
    """A recipe file cannot be read or describes an invalid pipeline."""


class UnknownPassError(RecipeError):
    """A pass name that no registered pass has."""


class ConfigError(OnnxSlimError):
    """A pass setting has the wrong name, type or value."""


class DataError(OnnxSlimError):
    """Input data for calibration or validation does not fit the model."""


class DataRejected(DataError):
    """ONNX Runtime refused to run a model on a batch that the readers' checks let through
    (dynamic dims, values): the data's fault, and the model that refused it is worth naming."""


class PipelineFailed(OnnxSlimError):
    """A pass failed its checks under --strict; nothing was written."""

    exit_code = EXIT_CHECK_FAILED


class ValidationFailed(OnnxSlimError):
    """The optimized model's outputs are outside the tolerances."""

    exit_code = EXIT_CHECK_FAILED

"""How a CLI run that does not finish ends: SIGTERM unwinds as Ctrl-C does (temporary folders and
staging files are removed on the way out), and an armed ``--report`` says that the run failed, so
that a CI gate does not read a previous run's ``passed: true``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import threading
from pathlib import Path

from onnxslim import io
from onnxslim.errors import OnnxSlimError


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job, docker stop, timeout): unwinds as Ctrl-C does, so that the
    temporary folders (model copies) and staging files are removed on the way out."""


@contextlib.contextmanager
def sigterm_unwinds():
    """SIGTERM raises ``Terminated`` while the command runs; the previous handler is back afterwards
    (main also runs in-process, in tests and callers' scripts)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _raise_terminated(signum: int, frame: object) -> None:
    # a second TERM (docker stop, then a supervisor) must not break off the cleanup the first started
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def arm_failure_report(args: argparse.Namespace, schema: str, *others: str | None) -> None:
    """From here on, a run that fails (exit 2, 3, interrupted) replaces ``--report`` with a failure
    report: a CI gate reading a previous run's ``passed: true`` would accept this one. Not armed when
    the report is one of the run's other files (``others``: the checks say so with their error)."""
    if args.report and not any(other and _same_file(args.report, other) for other in others):
        args.failure_report = (args.report, schema)


def report_failure(args: argparse.Namespace | None, code: int, failure: str, *, about: str | None = None) -> None:
    """Writes the failure report armed by the command, unless the error is about the report's own
    path, or the file there is not an onnxslim report (an input that the checks had not reached)."""
    path, schema = getattr(args, "failure_report", None) or (None, None)
    if path is None or (about and _same_file(path, about)) or not _replaceable(Path(path)):
        return
    payload = {"schema": schema, "passed": False, "exit_code": code, "failure": failure}
    try:
        io.write_text(path, json.dumps(payload, indent=2))
    except (OSError, OnnxSlimError):  # the error line already said why the run failed; the folder was checked
        logging.getLogger(__name__).debug("failure report not written to %s", path, exc_info=True)


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _replaceable(path: Path) -> bool:
    """Absent, or an onnxslim JSON report (a previous run's: its first key is the schema). Only the
    head is read: the path may name a large model."""
    if not path.exists():
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(256)
    except OSError:
        return False
    return re.match(rb'\{\s*"schema":\s*"onnxslim\.', head) is not None

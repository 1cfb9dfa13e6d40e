"""The `onnxslim` command. Exit codes: 0 ok, 1 result failed its checks, 2 usage or input error, 3 internal error."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape

from onnxslim import api, io, preflight, render
from onnxslim.core.flags import add_family_arguments, family_values
from onnxslim.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, OnnxSlimError, first_line
from onnxslim.input_shapes import parse_input_shapes
from onnxslim.outcome import Terminated, arm_failure_report, report_failure, sigterm_unwinds
from onnxslim.validation import cli as validation_cli
from onnxslim.validation.result import SCHEMA as VALIDATE_SCHEMA

EXIT_INTERNAL = 3
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + the signal's number, as a shell reports a killed process
COMMANDS = ("optimize", "validate", "inspect", "passes", "scan-prune")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        # argparse prints the whole usage block (40 lines for optimize) before the error: one line instead
        raise OnnxSlimError(f"{message} ('{self.prog} --help' lists the options)")


def _sample_count(text: str) -> int:
    """``--calibration-samples``: checked here so that its error names the flag (the API's check names
    the ``calibration_samples`` option, which a CLI user never wrote)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of samples, got {text!r}") from None
    if count < 1:  # 0 is an error, not "all"
        raise argparse.ArgumentTypeError(f"expected a sample count of at least 1, got {count}")
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxslim", description="Make ONNX models smaller and faster without breaking them.")
    parser.add_argument("--version", action="version", version=f"onnxslim {_version()}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    opt = sub.add_parser("optimize", help="optimize a model (the default command)")
    opt.add_argument("input", help="model to optimize (.onnx)")
    opt.add_argument("output", help="where to write the optimized model")
    opt.add_argument("--recipe", help="TOML recipe: [options] and [[pass]] tables (flags override it)")
    opt.add_argument("--no-simplify", dest="simplify", action="store_false", default=None, help="skip the default cleanup passes")
    opt.add_argument("--pass", dest="passes", action="append", default=[], metavar="NAME", help="add a pass by name (repeatable)")
    opt.add_argument("--strict", action="store_true", default=None, help="exit 1 and write nothing if any pass is rolled back or validation fails")
    opt.add_argument("--report", metavar="FILE.json", help="write the JSON report here")
    opt.add_argument("--overwrite-input", action="store_true", help="allow OUTPUT to be the INPUT path")
    opt.add_argument("--external-data", action=argparse.BooleanOptionalAction, default=None, help="store weights in OUTPUT.data (default: only above 2 GB)")
    calibration = opt.add_argument_group("calibration (data-aware passes)")
    calibration.add_argument("--calibration-data", metavar="PATH", help=".npz, folder of .npz/.npy, or folder of images")
    calibration.add_argument("--calibration-samples", type=_sample_count, metavar="N", help="use the first N samples")
    calibration.add_argument("--calibration-preprocess", metavar="SPEC", help="preprocessing for a folder of images (as --preprocess)")
    calibration.add_argument("--calibration-cache", metavar="FILE", help="read/write calibration statistics here "
                             "(reused when the data and model are the same), for any pass that calibrates")
    add_family_arguments(opt)
    validation_cli.add_arguments(opt)
    opt.add_argument("--no-validate", dest="validate", action="store_false", default=None, help="skip comparing outputs with the original")

    val = sub.add_parser("validate", help="compare an optimized model with the original on ONNX Runtime")
    val.add_argument("original")
    val.add_argument("optimized")
    val.add_argument("--report", metavar="FILE.json")
    val.add_argument("--lossy", action="store_true", default=None,
                     help="the lossy tolerances (cosine 0.99, SNR 17 dB, top-1 0.9) that optimize uses after quantization, "
                          "pruning or low rank; automatic when the optimized model has quantized ops or float16 weights")
    validation_cli.add_arguments(val)

    ins = sub.add_parser("inspect", help="show a model's inputs, outputs, opsets, ops and weights")
    ins.add_argument("model")
    ins.add_argument("--top", type=int, default=10, help="how many of the largest initializers to list")

    sub.add_parser("passes", help="list the available passes and their settings")
    _add_scan_prune(sub)

    for p in (opt, val, ins, *(sub.choices[c] for c in ("passes", "scan-prune"))):
        p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
        p.add_argument("-v", "--verbose", action="store_true", help="log what each step does")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "optimize")
    with sigterm_unwinds():
        return _main(argv)


def _main(argv: list[str]) -> int:
    err = _console(stderr=True)
    args = None
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return EXIT_USAGE
        _configure_logging(args)
        return _COMMANDS[args.command](args, err)
    except OnnxSlimError as exc:
        print(f"onnxslim: error: {exc.one_line()}", file=sys.stderr)
        report_failure(args, exc.exit_code, exc.one_line(), about=exc.path)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        code, word = (EXIT_TERMINATED, "terminated") if isinstance(exc, Terminated) else (EXIT_INTERRUPTED, "interrupted")
        print(f"onnxslim: {word}", file=sys.stderr)
        report_failure(args, code, word)
        return code
    except Exception as exc:  # a bug: one line by default, the traceback with -v
        line = f"internal error: {type(exc).__name__}: {first_line(exc)}"
        report_failure(args, EXIT_INTERNAL, line)
        if os.environ.get("ONNXSLIM_DEBUG") or "-v" in argv or "--verbose" in argv:
            traceback.print_exc()  # and still exit 3: re-raised, Python exited 1, which reads "validation failed"
            print(f"onnxslim: {line}", file=sys.stderr)
        else:
            print(f"onnxslim: {line} (rerun with -v for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def _optimize(args: argparse.Namespace, err: Console) -> int:
    _check_report_folder(args.report)
    arm_failure_report(args, api.OPTIMIZE_SCHEMA, args.input, args.output, f"{args.output}.data", args.recipe,
                        args.html, args.data, args.calibration_data, args.calibration_cache)
    progress = None if args.quiet or args.json else _Progress(err)
    try:
        result = api.run(
            args.input,
            args.output,
            simplify=args.simplify,
            passes=args.passes,
            recipe=args.recipe,
            input_shapes=parse_input_shapes(args.input_shape) or None,
            validate=args.validate,
            validation=validation_cli.settings_from_args(args),  # only flags given: they override the recipe
            strict=args.strict,
            overwrite_input=args.overwrite_input,
            external_data=args.external_data,
            calibration_data=args.calibration_data,
            calibration_samples=args.calibration_samples,
            calibration_preprocess=args.calibration_preprocess,
            calibration_cache=args.calibration_cache,
            other_outputs={"JSON report": args.report},
            progress=progress,
            **family_values(args),
        )
    finally:
        if progress:
            progress.stop()
    payload = result.to_dict()
    _write_report(args.report, payload)
    if args.json:
        _print_json(payload)
    elif not args.quiet:
        render.print_result(err, result.pipeline, result.validation, result.passed)
        if result.first_divergent_pass:
            err.print(f"outputs first diverge after pass [bold]{result.first_divergent_pass}[/]")
        for note in result.notes:
            err.print(f"note: {escape(note)}", highlight=False)
        for warning in result.warnings:
            err.print(f"[bold red]warning:[/] {escape(warning)}", highlight=False)
        if result.output:
            err.print(f"wrote {result.output}")
        elif result.strict:
            err.print("nothing written (--strict)")
    if not result.passed:  # an error line even with -q or --json (stdout stays JSON only), as for exit 2
        print(f"onnxslim: error: {result.failure or 'the result failed its checks'}", file=sys.stderr)
    return EXIT_OK if result.passed else EXIT_CHECK_FAILED


def _validate(args: argparse.Namespace, err: Console) -> int:
    _check_report_folder(args.report)
    _check_report_folder(args.html, what="HTML report")
    # the paths' checks (over the models, their weights, the data) are api.validate's, before any work;
    # an armed failure report is never written over a file that is not an onnxslim report
    arm_failure_report(args, VALIDATE_SCHEMA, args.original, args.optimized, args.data, args.html)
    options = validation_cli.options_from_args(args)
    if args.lossy:
        options = dataclasses.replace(options, lossy=True)
    report = api.validate(args.original, args.optimized, options=options, other_outputs={"JSON report": args.report})
    payload = report.to_dict()  # schema onnxslim.validate/1, docs/validation.md
    _write_report(args.report, payload)
    hint = "for a quantized, pruned or low-rank model add --lossy" if report.tolerances_decided and not report.lossy else ""
    if args.json:
        _print_json(payload)
    elif not args.quiet:
        if hint:
            err.print(f"note: {hint}", highlight=False)
        render.print_result(err, None, report, report.passed)  # its last line: PASSED or FAILED
    if not report.passed and (args.json or args.quiet):  # else the result above says it; one line here
        problems = report.reasons()
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        print(f"onnxslim: error: validation failed: {problems[0]}{more}" + (f"; {hint}" if hint else ""), file=sys.stderr)
    return EXIT_OK if report.passed else EXIT_CHECK_FAILED


def _inspect(args: argparse.Namespace, err: Console) -> int:
    summary = api.inspect(args.model, top=args.top)
    if args.json:
        _print_json(summary)
    elif not args.quiet:
        render.print_summary(_console(), summary)
    return EXIT_OK


def _passes(args: argparse.Namespace, err: Console) -> int:
    from onnxslim.core.config import describe_fields
    from onnxslim.core.registry import all_passes
    from onnxslim.passes import SIMPLIFY_PIPELINE

    rows = [
        {"name": name, "summary": cls.summary(), "lossy": cls.lossy, "in_simplify": name in SIMPLIFY_PIPELINE,
         "settings": describe_fields(cls.Config)}
        for name, cls in all_passes().items()
    ]
    if args.json:
        _print_json(rows)
    elif not args.quiet:
        render.print_passes(_console(), rows)
    return EXIT_OK


def _add_scan_prune(sub) -> None:
    scan = sub.add_parser("scan-prune", help="pruning sensitivity per layer/group, and proposed per-layer amounts")
    scan.add_argument("input", help="model to scan (the cleanup pipeline runs first, as for pruning)")
    scan.add_argument("--calibration-data", required=True, metavar="PATH", help=".npz, folder of .npz/.npy, or images")
    scan.add_argument("--calibration-samples", type=_sample_count, metavar="N", help="use the first N samples")
    scan.add_argument("--calibration-preprocess", metavar="SPEC", help="preprocessing for a folder of images")
    scan.add_argument("--prune-method", choices=("channel", "magnitude"), default="channel")
    scan.add_argument("--amounts", default="0.1,0.3,0.5,0.7", help="amounts to try per layer (default 0.1,0.3,0.5,0.7)")
    scan.add_argument("--target-reduction", type=float, help="parameter fraction to remove in the proposal")
    scan.add_argument("--max-cosine-loss", type=float, default=0.01, help="output cosine the proposal may lose (default 0.01)")
    scan.add_argument("--prune-skip", metavar="NAMES", help="comma-separated node names never pruned")
    scan.add_argument("--prune-first-last", action="store_true", help="allow pruning the first and last layers")
    scan.add_argument("--html", metavar="FILE.html", help="write the sensitivity plots here")


def _scan_prune(args: argparse.Namespace, err: Console) -> int:
    from onnxslim.data import FirstSamples, open_reader
    from onnxslim.passes.pruning.scan import scan_prune
    from onnxslim.passes.pruning.scan_report import scan_html, scan_table

    _check_report_folder(args.html, what="HTML report")  # written after the scan
    preflight.check_distinct_paths({"HTML report": args.html}, {**preflight.model_files(args.input, "input model"),
                                                                "calibration data": args.calibration_data})
    model = api.run(args.input, validate=False).model  # prune as the pass would see the model: after cleanup
    reader = open_reader(args.calibration_data, model, preprocess=args.calibration_preprocess)
    if args.calibration_samples is not None:  # 0 is an error, not "all"
        reader = FirstSamples(reader, args.calibration_samples)
    try:
        amounts = [float(a) for a in args.amounts.split(",") if a.strip()]
        skip = tuple(s.strip() for s in (args.prune_skip or "").split(",") if s.strip())
        result = scan_prune(model, reader, method=args.prune_method, amounts=amounts, target_reduction=args.target_reduction,
                            max_cosine_loss=args.max_cosine_loss, skip=skip, skip_first_last=not args.prune_first_last)
    except ValueError as exc:
        raise ConfigError(f"scan-prune: {first_line(exc)}") from None
    payload = result.to_dict()
    if payload.get("proposal"):
        payload["proposal"]["command"] = _proposal_command(args, payload)
    if args.html:
        _write_text(args.html, scan_html(payload, title=f"Pruning sensitivity: {Path(args.input).name}"))
    if args.json:
        _print_json(payload)
    elif not args.quiet:
        _console().print(scan_table(payload))
        if args.html:
            err.print(f"wrote {args.html}")
    return EXIT_OK


def _proposal_command(args: argparse.Namespace, payload: dict) -> str:
    """The `optimize` command that applies the proposal as the scan measured it: with the scan's
    calibration data, since channels were ranked by activation importance on it (without it the pass
    ranks by weight magnitude: YOLOv8n, 4 samples, removed 1,799,922 parameters and validated at
    cosine 0.9889 where the scan had measured 1,809,810 and 0.9955)."""
    command = ["onnxslim", args.input, f"{Path(args.input).stem}.pruned.onnx", "--prune", "0",
               "--prune-method", payload["method"], "--prune-overrides", ",".join(payload["proposal"]["overrides"]),
               "--calibration-data", args.calibration_data]
    if args.calibration_samples is not None:
        command += ["--calibration-samples", str(args.calibration_samples)]
    if args.calibration_preprocess:
        command += ["--calibration-preprocess", args.calibration_preprocess]
    if args.prune_skip:
        command += ["--prune-skip", args.prune_skip]
    return shlex.join(command)


_COMMANDS = {"optimize": _optimize, "validate": _validate, "inspect": _inspect, "passes": _passes, "scan-prune": _scan_prune}


def _check_report_folder(path: str | None, *, what: str = "report") -> None:
    """Before any work: a report that cannot be written must not leave a model behind."""
    if path:
        preflight.check_writable_folder(path, what=what)


def _print_json(payload: Any) -> None:
    """JSON on stdout; a reader that stops early (``| head``) is not an error: the exit code still
    says whether the model passed."""
    try:
        print(json.dumps(payload, indent=2, default=str), flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit


def _write_report(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        _write_text(path, json.dumps(payload, indent=2, default=str))


def _write_text(path: str, text: str) -> None:
    io.write_text(path, text)


def _configure_logging(args: argparse.Namespace) -> None:
    from rich.logging import RichHandler

    level = logging.ERROR if args.quiet else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=_console(stderr=True), show_time=False, show_path=False)])
    # the graph libraries' own warnings ("Skipped deduplication of initializer 'y' ...") are notes
    # on what a pass left as it was, not something the user can act on; --verbose shows them
    for library in ("onnx_ir", "onnxscript"):
        logging.getLogger(library).setLevel(level if args.verbose else max(level, logging.ERROR))


class _Progress:
    """A progress bar over passes, on stderr, gone when done."""

    def __init__(self, console: Console):
        from rich.progress import Progress

        self._progress = Progress(console=console, transient=True)
        self._task = None

    def __call__(self, name: str, index: int, total: int) -> None:
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("optimizing", total=total)
        self._progress.update(self._task, completed=index, description=name or "done")

    def detail(self, text: str) -> None:
        """What the running pass is doing (calibration batches...), in place of its name."""
        if self._task is not None:
            self._progress.update(self._task, description=text)

    def stop(self) -> None:
        if self._task is not None:
            self._progress.stop()


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Logs and CI pipes are not terminals: rich would wrap tables at 80 columns there.
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 140)


def _version() -> str:
    from onnxslim import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())

"""The ``smat-deploy`` command line: the command table, error reporting and exit statuses.

Every command is listed once, in :data:`COMMANDS` (name -> ``module:function`` plus one line of
help), and its module is imported only when that command runs or shows its own help. So
``smat-deploy --help`` and the commands that run exported engines never import PyTorch, and no
command module imports this one. A command whose optional package is missing becomes a stub that
names the package and how to install it (exit 2) while every other command keeps working, as
Polygraphy's tool registry does.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import signal
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from smat_deploy.errors import CheckFailed, SmatError

#: The command-line parser's own errors. typer ships its own copy of click in a private module; its public
#: ``typer.BadParameter`` derives from click's ``UsageError``, which derives from ``ClickException``.
_USAGE_ERROR, _CLICK_EXCEPTION = (
    next(base for base in typer.BadParameter.__mro__ if base.__name__ == name)
    for name in ("UsageError", "ClickException")
)

#: Exit statuses, the same for every command.
EXIT_OK = 0
#: A check failed: parity or an accuracy gate, an engine that failed in bench, failed load-test requests.
EXIT_CHECK_FAILED = 1
#: Bad input or usage (:class:`SmatError`, an unknown option), or a missing optional package.
EXIT_BAD_INPUT = 2
#: An unexpected internal error, i.e. a bug (``EX_SOFTWARE`` in sysexits.h).
EXIT_INTERNAL_ERROR = 70
#: Interrupted by Ctrl+C or SIGTERM (128 + SIGINT).
EXIT_INTERRUPTED = 130

EXIT_STATUS_HELP = (
    f"Exit status: {EXIT_OK} ok; {EXIT_CHECK_FAILED} a check failed (parity, an accuracy gate, a failed engine "
    f"or request); {EXIT_BAD_INPUT} bad input or usage, or a missing optional package; {EXIT_INTERNAL_ERROR} an "
    f"internal error (set SMAT_DEPLOY_DEBUG=1 for the traceback); {EXIT_INTERRUPTED} interrupted (Ctrl+C, SIGTERM)."
)

_EXPORT_EXTRA = "pip install 'smat-deploy[export]'"
_SERVE_EXTRA = "pip install 'smat-deploy[serve]'"
#: Optional packages by import name: (what to install, how). An import of any other missing module is a bug.
OPTIONAL_PACKAGES: dict[str, tuple[str, str]] = {
    "torch": ("torch", _EXPORT_EXTRA),
    "timm": ("timm", _EXPORT_EXTRA),
    "torchvision": ("torchvision", _EXPORT_EXTRA),
    "onnxscript": ("onnxscript", _EXPORT_EXTRA),
    "modelopt": ("nvidia-modelopt", _EXPORT_EXTRA),
    "polygraphy": ("polygraphy", _EXPORT_EXTRA),
    "skimage": ("scikit-image", _EXPORT_EXTRA),
    "matplotlib": ("matplotlib", _EXPORT_EXTRA),
    "tritonclient": ("tritonclient", _SERVE_EXTRA),
    "pytriton": ("nvidia-pytriton", "python -m smat_deploy.serve.environment --install"),
    "openvino": ("openvino", "pip install 'smat-deploy[openvino]'"),
    "aiohttp": ("aiohttp", "pip install 'smat-deploy[app]'"),
    "tensorrt": ("tensorrt", "pip install tensorrt --extra-index-url https://pypi.nvidia.com"),
}


@dataclass(frozen=True)
class Command:
    """One command: where its function lives, its line in ``smat-deploy --help``, what it cannot start without."""

    target: str  # "module:function"
    help: str
    needs: tuple[str, ...] = ()  # import names of optional packages, checked before the module is imported

    def missing(self) -> list[str]:
        return [package for package in self.needs if not _installed(package)]


_TORCH = ("torch", "timm")

#: Every command, in the order ``smat-deploy --help`` lists them (the order a user walks the pipeline).
COMMANDS: dict[str, Command] = {
    "matte": Command(
        "smat_deploy.cli.matte:matte",
        "Matte one photo (or a folder): automatic with no prompt, interactive with clicks, boxes, scribbles or masks.",
    ),
    "demo": Command(
        "smat_deploy.cli.demo:demo",
        "Export, make fp16/int8 variants, compare every engine with the reference, bench, and write a report.",
        _TORCH,
    ),
    "export": Command(
        "smat_deploy.cli.export:export_command",
        "Export SMat to ONNX with dynamic batch, height, width; prompt and state are inputs.",
        _TORCH,
    ),
    "calib-data": Command(
        "smat_deploy.cli.calib_data:calib_data",
        "Build a calibration set: images x every prompt kind (none, point, box, scribble, mask) + tensors.",
    ),
    "build": Command(
        "smat_deploy.cli.build:build",
        "Build a strongly typed TensorRT engine (precision comes from the ONNX file) plus its sidecar JSON.",
    ),
    "precision": Command(
        "smat_deploy.cli.precision:precision",
        "Sizes, preparation times, ms/image and accuracy vs float32 of float32 and its variants (cpu, fp16, int8).",
        _TORCH,
    ),
    "bench": Command(
        "smat_deploy.cli.bench:bench_command",
        "Benchmark engines side by side: latency p50/p90/p99, images/s, peak memory, accuracy vs the reference.",
        _TORCH,
    ),
    "fusion-check": Command(
        "smat_deploy.cli.fusion_check:fusion_check",
        "Check an INT8 ONNX file against TensorRT's Q/DQ fusion rules (DQ feeds its op directly, fp16 scales).",
    ),
    "sizes": Command(
        "smat_deploy.cli.sizes:sizes_command",
        "How photos of given sizes run on an engine here: the size it runs at, predicted peak memory, the budget.",
    ),
    "upsampling": Command(
        "smat_deploy.cli.upsampling:upsampling_command",
        "Quality of alphas from scaled-down runs brought back to full size: nearest, bilinear, guided vs full size.",
    ),
    "cpp-bench": Command(
        "smat_deploy.cli.cpp_bench:cpp_bench_command",
        "The C++ library (make cpp) against the Python Runtime on OpenVINO: per-call time and cold start, interleaved.",
    ),
    "parity": Command(
        "smat_deploy.cli.parity:parity_command",
        "Check an engine against the PyTorch reference per prompt kind; non-zero exit when a tolerance is exceeded.",
        _TORCH,
    ),
    "backends": Command(
        "smat_deploy.cli.backends:backends_command",
        "List the runtime backends: file types, devices, options, and whether each can run here.",
    ),
    "triton": Command(
        "smat_deploy.cli.triton:triton_command",
        "Write a Triton Inference Server model repository (config.pbtxt + model file) for an SMat engine.",
    ),
    "app": Command(
        "smat_deploy.cli.webapp:app_command",
        "Serve a web page to matte photos by clicking: open a photo, click, box or brush, see the alpha and cutout.",
        ("aiohttp",),
    ),
    "serve": Command(
        "smat_deploy.cli.serve:serve_command",
        "Serve SMat from Triton Inference Server (HTTP + gRPC, KServe v2), batching same-size requests.",
        ("tritonclient",),
    ),
    "loadtest": Command(
        "smat_deploy.cli.loadtest:loadtest_command",
        "Load-test a Triton server serving SMat: throughput and p50/p90/p99 latency.",
        ("tritonclient",),
    ),
    "finetune": Command(
        "smat_deploy.cli.finetune:finetune_command",
        "Fine-tune SMat with the paper's objective (separate L1 + Laplacian) and prompt mix; resumable.",
        _TORCH,
    ),
}


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


_NO_MODULE = re.compile(r"No module named '([^']+)'")


def missing_package(err: BaseException) -> str | None:
    """The optional package whose absence raised ``err`` (import name), or None (not an absent optional package)."""
    if not isinstance(err, ImportError):
        return None
    match = _NO_MODULE.search(str(err))
    if not isinstance(err, ModuleNotFoundError) and match is None:
        return None  # "cannot import name ...": an installed package of the wrong version, not a missing one
    name = err.name or (match[1] if match else "")
    top = name.partition(".")[0]
    return top if top in OPTIONAL_PACKAGES else None


def needs_message(command: str, packages: list[str]) -> str:
    """``smat-deploy export needs torch and timm (pip install 'smat-deploy[export]')``."""
    names = [OPTIONAL_PACKAGES.get(package, (package, ""))[0] for package in packages]
    hints = dict.fromkeys(OPTIONAL_PACKAGES.get(package, ("", f"pip install {package}"))[1] for package in packages)
    who = f"smat-deploy {command}" if command else "smat-deploy"
    return f"{who} needs {' and '.join(names)} ({'; '.join(hints)})"


def load_command(name: str) -> Any:
    """The click command for ``name``, importing its module now; a stub saying why when a package is missing."""
    spec = COMMANDS[name]
    if missing := spec.missing():
        return _unavailable(name, missing)
    module_name, _, function_name = spec.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        package = missing_package(err)
        if package is None:
            raise
        return _unavailable(name, [package])
    epilog = getattr(module, "EPILOG", "")
    epilog = f"{epilog}\n\n{EXIT_STATUS_HELP}".strip()  # a command's own words on status 1 come first
    return _single(name, getattr(module, function_name), help=spec.help, epilog=epilog)


def _single(name: str, function: Any, **settings: Any) -> Any:
    """``function`` as the click command ``name`` (one typer command on its own)."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    single.command(name, **settings)(function)
    return typer.main.get_command(single)


def _unavailable(name: str, packages: list[str]) -> Any:
    """A command that takes any arguments and fails with one line naming the missing package (exit 2)."""
    message = needs_message(name, packages)

    def fail(args: Annotated[list[str] | None, typer.Argument(hidden=True)] = None) -> None:
        raise SmatError(message)

    return _single(
        name,
        fail,
        help=message,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def _listed(name: str, spec: Command) -> Any:
    """What ``smat-deploy --help`` shows for a command, without importing it."""
    missing = spec.missing()
    names = " and ".join(OPTIONAL_PACKAGES[package][0] for package in missing)
    text = spec.help if not missing else f"{spec.help} (unavailable here: needs {names})"
    return _single(name, lambda: None, help=text, short_help=text)


class CommandTable(TyperGroup):
    """The root group: lists :data:`COMMANDS` and imports a command's module only when that command is used."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        return _listed(cmd_name, spec) if self._listing else load_command(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


ROOT_EPILOG = f"""Each command's --help has examples. Image sizes are WIDTHxHEIGHT (a bare N means NxN); -o/--output \
is where a command writes its main product; --json prints one JSON object whose "schema" key names the \
command and version (smat-deploy/COMMAND/1).

{EXIT_STATUS_HELP}
"""

app = typer.Typer(
    cls=CommandTable,
    name="smat-deploy",
    help="SMat (automatic and interactive ViT matting) from PyTorch to verified, fast inference.",
    epilog=ROOT_EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: brackets such as [B,3,H,W] are shown as written
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from smat_deploy import __version__

        typer.echo(f"smat-deploy {__version__}")
        raise typer.Exit()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread: it unwinds like Ctrl-C, so temporary files are removed and nothing is
    left half-written.

    It is deliberately not a :class:`KeyboardInterrupt`: CPython remembers a KeyboardInterrupt that escapes code run
    from a string (``exec``/``eval`` of source text, which torch and dataclasses do) and, under ``python -m``, ends
    the process by SIGINT at exit even after it was caught, so the documented exit status 130 would be lost.
    """


def _terminated(signum, frame) -> None:
    raise _Terminated


def _command_name(argv: list[str]) -> str:
    return next((arg for arg in argv if not arg.startswith("-")), "") if argv else ""


def _fail(message: object, status: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def main() -> None:
    """Console entry point: every failure is one ``error:`` line and a documented exit status, never a traceback."""
    warnings.showwarning = _one_line_warning
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    debug = bool(os.environ.get("SMAT_DEPLOY_DEBUG"))
    try:
        status = app(prog_name="smat-deploy", standalone_mode=False)
    except _USAGE_ERROR as err:  # an unknown option, a missing argument, a value of the wrong type
        if type(err).__name__ == "NoArgsIsHelpError":  # a bare `smat-deploy`: the help
            err.show()
            sys.exit(EXIT_OK)
        where = f" (see {err.ctx.command_path} --help)" if err.ctx is not None else ""
        _fail(f"{err.format_message()}{where}", EXIT_BAD_INPUT)
    except _CLICK_EXCEPTION as err:
        _fail(err.format_message(), err.exit_code)
    except typer.Abort:
        _fail("interrupted", EXIT_INTERRUPTED)
    except CheckFailed as err:
        _fail(err, EXIT_CHECK_FAILED)
    except SmatError as err:
        _fail(err, EXIT_BAD_INPUT)
    except (KeyboardInterrupt, _Terminated):
        _fail("interrupted", EXIT_INTERRUPTED)
    except Exception as err:
        if debug:
            raise
        if (package := missing_package(err)) is not None:  # an optional package imported where it is first used
            command = _command_name(sys.argv[1:])
            _fail(needs_message(command if command in COMMANDS else "", [package]), EXIT_BAD_INPUT)
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        _fail(f"unexpected {type(err).__name__}: {detail} (set SMAT_DEPLOY_DEBUG=1 for details)", EXIT_INTERNAL_ERROR)
    if status == EXIT_INTERRUPTED:  # typer turns Ctrl-C (and SIGTERM, above) into exit status 130
        _fail("interrupted", EXIT_INTERRUPTED)
    sys.exit(status if isinstance(status, int) else EXIT_OK)

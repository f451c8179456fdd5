"""The typer application, error reporting, and command registration."""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings

import typer

from smat_deploy.errors import CheckFailed, SmatError

app = typer.Typer(
    name="smat-deploy",
    help="SMat (automatic and interactive ViT matting) from PyTorch to verified, fast inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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


def _register_commands() -> None:
    from smat_deploy.cli import (  # noqa: F401  (each module registers its command on `app`)
        bench,
        build,
        calib_data,
        demo,
        export,
        finetune,
        loadtest,
        matte,
        parity,
        precision,
        serve,
        triton,
    )


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C, so temporary files are removed and no output is half-written


def main() -> None:
    """Console entry point: bad input becomes one ``error:`` line and a non-zero exit, never a traceback."""
    warnings.showwarning = _one_line_warning
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    _register_commands()
    debug = bool(os.environ.get("SMAT_DEPLOY_DEBUG"))
    try:
        app(prog_name="smat-deploy")
    except CheckFailed as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except SmatError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit as exit_:
        if exit_.code == 130:  # typer turns Ctrl-C (and SIGTERM, above) into a silent exit 130
            print("error: interrupted", file=sys.stderr)
        raise
    except Exception as err:
        if debug:
            raise
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(
            f"error: unexpected {type(err).__name__}: {detail} (set SMAT_DEPLOY_DEBUG=1 for details)", file=sys.stderr
        )
        sys.exit(1)

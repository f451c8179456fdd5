"""What PyTriton's bundled Triton server needs from the Python that runs it, set up without manual steps.

NVIDIA PyTriton (``nvidia-pytriton``) ships ``tritonserver`` and one Python-backend *stub* per Python
version. The stub is a separate process that embeds the interpreter, which brings two requirements:

1. It links ``libpython3.X.so`` of the running interpreter, so that library's folder must be on the
   server's ``LD_LIBRARY_PATH``. :func:`libpython_dir` finds it (``sysconfig``'s ``LIBDIR``) and
   :func:`prepare` puts it there; PyTriton starts the server with this process's environment. A Python
   built without ``--enable-shared`` has no such library, and serving is refused in one line.
2. The stub's C++ side (pybind11 as built into Triton 2.51) reads numpy arrays with numpy 1's memory
   layout: under numpy 2 every output reaches the client empty. When this interpreter has numpy 2, the
   stub gets its own small environment instead (a venv of this same Python with numpy<2 and pyzmq,
   :func:`stub_environment`), created once. Tensors cross between the two processes as raw bytes with a
   dtype string, so the two numpy versions never meet.

``nvidia-pytriton`` itself is installed with ``--no-deps`` (``python -m smat_deploy.serve.environment
--install``, which ``make`` runs): its wheel pins numpy<2 for the whole environment only because of (2).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from smat_deploy.errors import SmatError

#: The PyTriton release this module was written and tested against (it patches one of its functions).
PYTRITON_VERSION = "0.7.0"
PYTRITON_REQUIREMENT = f"nvidia-pytriton=={PYTRITON_VERSION}"
#: What the stub's own environment holds: numpy 1 (the stub's pybind11) and pyzmq (PyTriton's proxy).
STUB_REQUIREMENTS = ("numpy>=1.21,<2", "pyzmq>=23")
STUB_ENV_VARIABLE = "SMAT_TRITON_STUB_ENV"
_MARKER = "smat-deploy-stub.json"


def pytriton_unavailable_reason() -> str | None:
    """One line saying why PyTriton cannot be used here; None when it can."""
    try:
        version = metadata.version("nvidia-pytriton")
    except metadata.PackageNotFoundError:
        return (
            "NVIDIA PyTriton is not installed: run 'python -m smat_deploy.serve.environment --install' "
            f"(installs {PYTRITON_REQUIREMENT} with --no-deps; make does this)"
        )
    if version != PYTRITON_VERSION:
        return (
            f"nvidia-pytriton {version} is installed; smat-deploy serve needs {PYTRITON_VERSION} "
            "(run 'python -m smat_deploy.serve.environment --install')"
        )
    return None


def libpython_dir() -> Path:
    """The folder holding this interpreter's shared ``libpython`` (what the Triton stub links)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY") or ""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir or not (Path(libdir) / soname).is_file():
        raise SmatError(
            f"this Python ({sys.executable}) has no shared libpython{version}.so, which the Triton server's Python "
            "stub links: use a Python built with --enable-shared (pyenv builds and most OS packages are)"
        )
    return Path(libdir)


def _in_venv() -> bool:
    return sys.prefix != sys.base_prefix


def stub_environment_path() -> Path:
    """Where the stub's numpy 1 environment lives: ``$SMAT_TRITON_STUB_ENV``, else beside this venv, else a cache."""
    if configured := os.environ.get(STUB_ENV_VARIABLE):
        return Path(configured).expanduser().resolve()
    if _in_venv() and os.access(sys.prefix, os.W_OK):
        return Path(sys.prefix) / "triton-stub"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "smat-deploy" / f"triton-stub-py{sys.version_info.major}.{sys.version_info.minor}"


def _expected_marker() -> dict:
    return {
        "python": sys.version,
        "base_prefix": sys.base_prefix,
        "requirements": list(STUB_REQUIREMENTS),
    }


def _is_ready(env: Path) -> bool:
    try:
        marker = json.loads((env / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker == _expected_marker() and (env / "bin" / "python3").exists()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], what: str, env: Path) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SmatError(f"could not create the Triton stub environment {env}: {what} failed: {err}") from None
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise SmatError(f"could not create the Triton stub environment {env}: {what} failed: {detail}")


def stub_environment(progress: Callable[[str], None] | None = None) -> Path:
    """The numpy 1 environment for the Triton stub, created (once, under a lock) when missing or stale."""
    env = stub_environment_path()
    if _is_ready(env):
        return env
    with _locked(env.with_name(env.name + ".lock")):
        if _is_ready(env):  # another process finished it while we waited
            return env
        if progress is not None:
            progress(
                f"preparing the Triton stub's Python environment once ({', '.join(STUB_REQUIREMENTS)}) in {env} ..."
            )
        shutil.rmtree(env, ignore_errors=True)
        try:
            _run([sys.executable, "-m", "venv", str(env)], "python -m venv", env)
            python = str(env / "bin" / "python3")
            _run(
                [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *STUB_REQUIREMENTS],
                "pip install",
                env,
            )
            (env / _MARKER).write_text(json.dumps(_expected_marker(), indent=2) + "\n", encoding="utf-8")
        except BaseException:
            shutil.rmtree(env, ignore_errors=True)
            raise
    return env


def needs_stub_environment() -> bool:
    """True when this interpreter's numpy is too new for the Triton stub (numpy 2 and later)."""
    import numpy

    return int(numpy.__version__.split(".")[0]) >= 2


@dataclass(frozen=True)
class ServeEnvironment:
    libpython_dir: Path
    stub_python: Path  # the prefix whose bin/python3 the stub embeds


def _configure_pytriton(env: Path) -> None:
    """Point PyTriton's stub at ``env`` and keep the server's console chatter out of our stdout.

    PyTriton puts ``<env>/bin`` first on the stub's PATH, and the stub embeds that ``python3``. Triton's own
    log goes to a file (``--triton-log``); what the server prints on its console is still kept by PyTriton.
    """
    import pytriton.server.triton_server as triton_server
    import pytriton.triton as triton_module

    hooks = (
        getattr(triton_server, "get_triton_python_backend_python_env", None),
        getattr(triton_module, "TritonServer", None),
    )
    if not all(callable(hook) for hook in hooks):
        raise SmatError(f"this nvidia-pytriton lacks the hooks smat-deploy uses; install {PYTRITON_REQUIREMENT}")
    triton_server.get_triton_python_backend_python_env = lambda: env
    server_class = triton_server.TritonServer
    triton_module.TritonServer = functools.partial(server_class, verbose=False)


def prepare(progress: Callable[[str], None] | None = None) -> ServeEnvironment:
    """Everything PyTriton needs before it starts the server: one call, no manual steps."""
    if (reason := pytriton_unavailable_reason()) is not None:
        raise SmatError(reason)
    libdir = libpython_dir()
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if str(libdir) not in paths:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([str(libdir), *paths])
    stub = stub_environment(progress) if needs_stub_environment() else Path(sys.exec_prefix)
    _configure_pytriton(stub)
    return ServeEnvironment(libdir, stub)


def install_pytriton() -> None:
    """``pip install --no-deps nvidia-pytriton==VERSION`` into this interpreter, unless it is already there."""
    if pytriton_unavailable_reason() is None:
        return
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", PYTRITON_REQUIREMENT]
    if subprocess.run(command, check=False).returncode != 0:
        raise SmatError(f"pip could not install {PYTRITON_REQUIREMENT}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m smat_deploy.serve.environment",
        description="Prepare this Python for `smat-deploy serve`: PyTriton and the Triton stub's environment.",
    )
    parser.add_argument("--install", action="store_true", help=f"also pip install {PYTRITON_REQUIREMENT} --no-deps")
    args = parser.parse_args(argv)
    try:
        if args.install:
            install_pytriton()
        prepared = prepare(progress=lambda text: print(text, file=sys.stderr))
    except SmatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"libpython: {prepared.libpython_dir}")
    print(f"Triton stub Python environment: {prepared.stub_python}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

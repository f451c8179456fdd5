"""Run a conversion step in a fresh process.

Model Optimizer patches ONNX Runtime inside the process that imports it, after which ONNX Runtime's
own static quantiser fails ("quantization parameters are not specified"). Calibration also holds
gigabytes of activations. A spawned child per step keeps the libraries apart, returns its memory
to the system when it ends, and turns an out-of-memory kill into a clear error instead of a crash of
the whole command.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from smat_deploy.errors import SmatError


def _quiet() -> None:
    """Silence the child's own output (library INFO logs, calibration progress bars).

    Failures still reach the parent as exceptions, which become one-line errors there.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def run_isolated[T](what: str, function: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``function(*args, **kwargs)`` in a spawned, quiet process; its exceptions are re-raised here."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_quiet) as pool:
        try:
            return pool.submit(function, *args, **kwargs).result()
        except BrokenProcessPool:
            raise SmatError(f"{what} died before finishing (out of memory?)") from None

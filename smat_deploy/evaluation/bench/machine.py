"""The machine a benchmark ran on, and its float32 matrix-product rate: the ceiling engines are judged by.

An fp32 engine cannot do SMat's matmuls and convolutions much faster than the machine multiplies
large float32 matrices, so ``bench`` reports each engine's achieved GFLOP/s as a share of a large
``torch.mm`` timed in the engine's own process moments before it runs (same machine, same load,
same thread count). On a shared machine both numbers move together; their ratio is the figure to
read.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass

import torch

from smat_deploy.runtime.memory import peak_resident_mb, resident_mb

#: Side of the square float32 matrices whose product sets the ceiling (2 x 4096^3 = 137 GFLOP).
DEFAULT_MATMUL_SIZE = 4096


@dataclass(frozen=True)
class MatmulRate:
    size: int
    threads: int
    repeats: int
    best_seconds: float
    gflops: float  # 2 n^3 / best time

    def as_dict(self) -> dict:
        return asdict(self)


def matmul_rate(size: int = DEFAULT_MATMUL_SIZE, repeats: int = 3, threads: int | None = None) -> MatmulRate:
    """Best of ``repeats`` timed ``torch.mm`` products of two ``size x size`` float32 matrices (after one warm-up)."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        left = torch.rand(size, size, generator=generator)
        right = torch.rand(size, size, generator=generator)
        out = torch.empty(size, size)
        torch.mm(left, right, out=out)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(left, right, out=out)
            best = min(best, time.perf_counter() - start)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    return MatmulRate(size, used, repeats, best, 2.0 * size**3 / best / 1e9)


def cpu_model() -> str:
    """The processor's marketing name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> dict:
    """What the figures were measured on: CPU, how many CPUs this process may use, GPU if any."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu_model(),
        "logical_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(terse=True),
    }


def current_rss_mb() -> float:
    """This process's resident memory now, in MB (10^6 bytes)."""
    return resident_mb() or peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return peak_resident_mb()

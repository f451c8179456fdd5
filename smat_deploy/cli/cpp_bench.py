"""``smat-deploy cpp-bench``: the C++ library against the Python ``Runtime`` on the same backend and model.

Per call: the C ABI (``libsmat.so`` through ctypes) and ``Runtime.open(model, backend="openvino")`` in one
process, interleaved round by round (the order flips every round), on the same 8-bit photo and box prompt;
the figure is the median of the rounds' C++/Python ratios (each round's two calls ran back to back).
Cold start: ``cpp/build/smat_matte`` against ``smat-deploy matte --backend openvino`` as whole commands
(open the model, read the photo, one alpha, write it), interleaved.
The wrapper must add nothing measurable: a C++ call more than 3% slower than Python's fails the run (exit 1).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from smat_deploy._table import format_table
from smat_deploy.cli._output import print_json
from smat_deploy.cli._progress import progress_bars
from smat_deploy.cli._shapes import parse_image_sizes
from smat_deploy.errors import CheckFailed, SmatError

#: How much slower than Python's a C++ call may be.
PER_CALL_LIMIT = 1.03

EPILOG = """Examples:

  smat-deploy cpp-bench --engine export/smat.onnx

  smat-deploy cpp-bench --engine export/smat.onnx --sizes 518x518,1024x768 --rounds 9 --cold 5 --json

Build the library first (make cpp). The photo is a generated one unless --photo is given; it is resized to
each size. Times are medians; the per-call ratio is the median of each round's C++/Python ratio (below 1:
C++ faster).
"""


def _photo(path: Path | None, width: int, height: int) -> np.ndarray:
    from PIL import Image

    if path is None:
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x / width, y / height, (x + y) / (width + height)], -1) * 200
        return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    from smat_deploy.images import load_image

    image = Image.fromarray(np.rint(load_image(path) * 255).astype(np.uint8))
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))


def _box(width: int, height: int) -> list[dict]:
    return [
        {"type": "box", "x0": width // 8, "y0": height // 10, "x1": width - width // 8, "y1": height - height // 20}
    ]


def cpp_bench_command(
    engine: Annotated[Path, typer.Option("--engine", "-e", help="The whole model: an exported .onnx (smat.onnx).")],
    sizes: Annotated[str, typer.Option(help="Photo sizes, WIDTHxHEIGHT, comma-separated.")] = "518x518,1024x768",
    rounds: Annotated[int, typer.Option(help="Timed calls of each side per size (interleaved).")] = 7,
    warmup: Annotated[int, typer.Option(help="Untimed calls of each side per size first.")] = 1,
    cold: Annotated[int, typer.Option(help="Cold starts of each program (0: skip).")] = 3,
    photo: Annotated[
        Path | None, typer.Option(help="A photo to resize to each size (default: a generated one).")
    ] = None,
    library: Annotated[
        Path | None, typer.Option(help="libsmat.so (default: $SMAT_CPP_LIB, else cpp/build/libsmat.so).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """The C++ library (make cpp) against the Python Runtime on OpenVINO: per-call time and cold start, interleaved."""
    from smat_deploy import Runtime
    from smat_deploy.cpp import DEFAULT_LIBRARY, Engine, load_library

    if rounds < 3:
        raise SmatError(f"--rounds must be at least 3, got {rounds}")
    if warmup < 0 or cold < 0:
        raise SmatError("--warmup and --cold must be >= 0")
    if not engine.is_file():
        raise SmatError(f"engine not found: {engine}")
    if photo is not None and not photo.is_file():
        raise SmatError(f"photo not found: {photo}")
    shapes = parse_image_sizes(sizes, "--sizes")
    lib_path = Path(library or DEFAULT_LIBRARY)
    lib = load_library(library)
    program = lib_path.parent / "smat_matte"
    cpp_engine = Engine(lib, engine)
    python = Runtime.open(engine, backend="openvino")
    rows, report = [], {"engine": str(engine), "library": str(lib_path), "version": lib.smat_version().decode()}
    calls = []
    with progress_bars("cpp-bench", "call") as progress:
        tick = progress(len(shapes) * 2 * (rounds + warmup) + 2 * cold)
        for size in shapes:
            pixels = _photo(photo, size.width, size.height)
            prompts = _box(size.width, size.height)
            sides = {
                "cpp": lambda p=pixels, q=prompts: cpp_engine.matte(p, q),
                "python": lambda p=pixels, q=prompts: python(p, q),
            }
            times: dict[str, list[float]] = {"cpp": [], "python": []}
            alphas = {}
            for index in range(warmup + rounds):
                order = ("cpp", "python") if index % 2 == 0 else ("python", "cpp")
                for side in order:
                    start = time.perf_counter()
                    alphas[side] = sides[side]()
                    elapsed = time.perf_counter() - start
                    if index >= warmup:
                        times[side].append(elapsed)
                    tick()
            diff = float(np.abs(alphas["cpp"] - alphas["python"]).max())
            cpp_ms, python_ms = (statistics.median(times[s]) * 1000 for s in ("cpp", "python"))
            # each round's two calls ran back to back: the median of their ratios cancels slow drifts in load
            ratio = statistics.median(c / p for c, p in zip(times["cpp"], times["python"], strict=True))
            calls.append(
                {
                    "size": str(size),
                    "cpp_ms": round(cpp_ms, 4),
                    "python_ms": round(python_ms, 4),
                    "cpp_over_python": round(ratio, 4),
                    "max_abs_diff": diff,
                    "within_limit": ratio <= PER_CALL_LIMIT,
                }
            )
        cpp_engine.close()
        starts = _cold_starts(program, engine, cold, tick) if cold else None
    report["per_call"] = calls
    report["per_call_limit"] = PER_CALL_LIMIT
    report["rounds"] = rounds
    report["cold_start"] = starts
    if json_output:
        print_json("cpp-bench", report)
    else:
        typer.echo(
            f"C++ library {report['version']} ({lib_path}) against Runtime(openvino) on {engine}, {rounds} rounds"
        )
        rows = [
            {
                "size": c["size"],
                "C++ ms": c["cpp_ms"],
                "Python ms": c["python_ms"],
                "C++/Python": c["cpp_over_python"],
                "max |diff|": c["max_abs_diff"],
                f"<= {PER_CALL_LIMIT:g}": "yes" if c["within_limit"] else "NO",
            }
            for c in calls
        ]
        typer.echo(format_table(rows))
        if starts:
            typer.echo(
                f"cold start (open + first alpha, {starts['size']}, median of {cold}): smat_matte "
                f"{starts['cpp_s']:.2f} s, smat-deploy matte {starts['python_s']:.2f} s "
                f"({starts['python_over_cpp']:.1f}x)"
            )
    slow = [c["size"] for c in calls if not c["within_limit"]]
    if slow:
        raise CheckFailed(
            f"a C++ call is more than {100 * (PER_CALL_LIMIT - 1):.0f}% slower than Python's at {', '.join(slow)}"
        )


def _cold_starts(program: Path, engine: Path, count: int, tick) -> dict:
    if not program.is_file():
        raise SmatError(f"no {program}: build the example program with make cpp")
    from PIL import Image

    with tempfile.TemporaryDirectory() as scratch:
        photo = Path(scratch) / "photo.png"
        Image.fromarray(_photo(None, 518, 518)).save(photo)
        commands = {
            "cpp": [str(program), str(photo), "--engine", str(engine), "-o", str(Path(scratch) / "cpp.png")],
            "python": [
                sys.executable,
                "-m",
                "smat_deploy",
                "matte",
                str(photo),
                "--engine",
                str(engine),
                "--backend",
                "openvino",
                "-o",
                str(Path(scratch) / "python.png"),
            ],
        }
        times: dict[str, list[float]] = {"cpp": [], "python": []}
        for index in range(count):
            for side in ("cpp", "python") if index % 2 == 0 else ("python", "cpp"):
                start = time.perf_counter()
                result = subprocess.run(commands[side], capture_output=True, text=True, timeout=600, check=False)
                times[side].append(time.perf_counter() - start)
                if result.returncode != 0:
                    raise SmatError(f"{' '.join(commands[side][:2])} failed: {result.stderr.strip().splitlines()[-1:]}")
                tick()
    cpp_s, python_s = statistics.median(times["cpp"]), statistics.median(times["python"])
    return {
        "size": "518x518",
        "cpp_s": round(cpp_s, 3),
        "python_s": round(python_s, 3),
        "python_over_cpp": round(python_s / cpp_s, 2),
    }

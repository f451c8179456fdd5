"""One benchmark job (one engine, one size, one batch) in a fresh process; or the reference's alphas.

``bench`` starts ``python -m smat_deploy.evaluation.bench.worker JOB.json`` for every job, so the
peak resident memory the job reports (``getrusage`` ``ru_maxrss`` of this process) belongs to that
engine at that size alone: nothing another engine or a bigger size allocated earlier can inflate
it, and nothing is shared with the parent. The job file says what to run; the worker prints one
``step`` line per finished call (the parent's progress bar) and finally one ``result {json}`` line.
It saves the alpha of its first call so the parent can compare engines on identical inputs.
:func:`run_in_worker` is the parent's side of that exchange.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import smat_deploy
from smat_deploy.contract import MIN_SIDE
from smat_deploy.errors import SmatError

#: Composites are generated at most this large and resized up: generating 1560x1040 takes seconds.
_COMPOSITE_SIDE = 448


def bench_inputs(height: int, width: int, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic contract inputs: composites (structure at every scale) with a click on even samples.

    Odd samples are automatic, so a batch exercises both modes. The same arguments give the same
    arrays in every process.
    """
    from smat_deploy import prompts as P
    from smat_deploy.data.cases import prompt_from_alpha
    from smat_deploy.data.synthetic import make_composite

    scale = min(1.0, _COMPOSITE_SIDE / max(height, width))
    small = (max(MIN_SIDE, round(height * scale)), max(MIN_SIDE, round(width * scale)))
    images, masks = [], []
    for index in range(batch):
        sample = make_composite(small, seed=seed + index)
        planes = torch.from_numpy(np.concatenate([sample.image, sample.alpha[..., None]], axis=-1)).permute(2, 0, 1)
        planes = F.interpolate(planes[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        planes = planes.clamp(0, 1).numpy()
        images.append(planes[:3])
        kind = "point" if index % 2 == 0 else "none"
        masks.append(P.rasterize(prompt_from_alpha(planes[3], kind), (height, width))[None])
    prompt = np.stack(masks).astype(np.float32)
    state = (prompt.reshape(batch, -1) != 0).any(axis=1, keepdims=True).astype(np.float32)
    return np.ascontiguousarray(np.stack(images), dtype=np.float32), prompt, state


def wrapper_work_ms(
    runtime: object, image: np.ndarray, prompt: np.ndarray, state: np.ndarray, repeats: int = 20
) -> float:
    """Median time of what ``Runtime.__call__`` adds around the engine (input checks and conversion, size
    limits, output conversion), timed alone: free of the engine's own run-to-run noise."""
    from smat_deploy.runtime.inputs import prepare_inputs, restore_output

    alpha = np.zeros((image.shape[0], 1, *image.shape[2:]), np.float32)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        prepared = prepare_inputs(image, prompt, state)
        runtime.backend.limits.check(*prepared.shape, source=runtime.backend.source)  # type: ignore[attr-defined]
        restore_output(alpha, prepared)
        samples.append(time.perf_counter() - start)
    return float(np.median(samples)) * 1e3


def _open(job: dict):
    """The job's engine as a :class:`~smat_deploy.runtime.Runtime` under the job's size policy."""
    from smat_deploy.runtime import Runtime
    from smat_deploy.runtime.sizing import SizePolicy

    policy = SizePolicy(**job["size_policy"])
    return Runtime.open(
        job["engine"], backend=job["backend"], device=job["device"], size_policy=policy, **job["options"]
    )


def run_reference(job: dict, step: Callable[[], None], stage: dict) -> dict:
    """The reference's alphas for every case, one process for all of them (nothing is timed here).

    The reference runs under the same size policy as the engines; each case records the size it ran at, so
    only engines that ran at the same size are compared with it.
    """
    runtime = _open(job)
    stage["at"] = "run"
    step()
    run_sizes = []
    for case in job["cases"]:
        image, prompt, state = bench_inputs(case["height"], case["width"], case["batch"], job["seed"])
        alpha, report = runtime.call(image, prompt, state)
        np.save(case["alpha_path"], np.asarray(alpha, dtype=np.float32))
        run_sizes.append([report.plan.run_width, report.plan.run_height] if report.plan else None)
        step()
    return {"status": "ok", "weights": runtime.info.details.get("weights"), "run_sizes": run_sizes}


def run_job(job: dict, step: Callable[[], None], stage: dict) -> dict:
    """Time the matmul ceiling, open the engine, run warm-ups and timed calls; report latencies and memory.

    The matmul runs first, in this process and moments before the engine, so engine and ceiling
    see the same machine load; its buffers are freed before the engine opens and stay below any
    real engine's peak, so they do not show in ``peak_rss_mb``.
    """
    from smat_deploy.evaluation.bench.machine import current_rss_mb, matmul_rate, peak_rss_mb

    base_rss = current_rss_mb()
    matmul = matmul_rate(job["matmul_size"], threads=job["threads"]).as_dict() if job["matmul_size"] else None
    start = time.perf_counter()
    runtime = _open(job)
    open_seconds = time.perf_counter() - start
    stage["at"] = "run"
    loaded_rss = current_rss_mb()
    step()
    image, prompt, state = bench_inputs(job["height"], job["width"], job["batch"], job["seed"])
    feed = {"image": image, "prompt": prompt, "state": state}
    plan = runtime.plan(job["batch"], job["height"], job["width"])
    # The bare session call runs the whole photo: only where the policy runs it at its own size.
    bare = runtime.backend.raw_call() if job["overhead"] and plan is not None and not plan.scaled else None
    on_cuda = runtime.info.device.startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    alpha = None
    for _ in range(job["warmup"]):
        out = runtime(image, prompt, state)
        alpha = out if alpha is None else alpha
        step()
    times, bare_times, stages = [], [], []
    for index in range(job["iters"]):
        # Interleave wrapper and bare calls, alternating which goes first, so drift and order cancel out.
        if bare is not None and index % 2 == 1:
            bare_times.append(_timed(lambda: bare(feed)))
        start = time.perf_counter()
        out, report = runtime.call(image, prompt, state)
        times.append(time.perf_counter() - start)
        stages.append(report.stages)
        alpha = out if alpha is None else alpha
        if bare is not None and index % 2 == 0:
            bare_times.append(_timed(lambda: bare(feed)))
        step()
    if alpha is None:  # no warm-up and no timed call (a reference job): one call for the accuracy columns
        alpha = runtime(image, prompt, state)
        step()
    np.save(job["alpha_path"], np.asarray(alpha, dtype=np.float32))
    info = runtime.info
    return {
        "status": "ok",
        "backend": info.backend,
        "precision": info.precision,
        "device": info.device,
        "providers": info.providers,
        "weights": info.details.get("weights"),
        "open_seconds": open_seconds,
        "matmul": matmul,
        "latencies": times,
        "bare_latencies": bare_times,
        "wrapper_work_ms": wrapper_work_ms(runtime, image, prompt, state) if bare is not None else None,
        "base_rss_mb": base_rss,
        "loaded_rss_mb": loaded_rss,
        "peak_rss_mb": peak_rss_mb(),
        "torch_cuda_peak_mb": torch.cuda.max_memory_allocated() / 1e6 if on_cuda else None,
        "threads": info.details.get("threads"),
        "plan": None if plan is None else plan.as_dict(),
        "stages": stages,
    }


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def run_in_worker(job: dict, workdir: Path, step: Callable[[], None], expected_steps: int) -> dict:
    """Parent side: run one job in a fresh interpreter; a crash or a kill becomes an ``error:`` status.

    ``step`` is called for every call the worker finishes (the progress bar), and made up to
    ``expected_steps`` when the worker stops early.
    """
    job_path = workdir / f"{job['name']}.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ)
    package_root = str(Path(smat_deploy.__file__).resolve().parents[1])  # the worker runs this very code
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "smat_deploy.evaluation.bench.worker", str(job_path)]
    result, steps = None, 0
    with open(workdir / f"{job['name']}.stderr", "w+", encoding="utf-8") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("step"):
                    steps += 1
                    step()
                elif line.startswith("result "):
                    result = json.loads(line[len("result ") :])
            code = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if result is None:
            stderr.seek(0)
            lines = [line.strip() for line in stderr if line.strip()]
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
            hint = " (out of memory?)" if code == -signal.SIGKILL else ""
            result = {"status": f"error: the worker {how}{hint}" + (f": {lines[-1]}" if lines else "")}
    for _ in range(expected_steps - steps):  # a job that stopped early still moves the bar to its end
        step()
    result["pid"] = process.pid
    return result


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))

    def step() -> None:
        print("step", flush=True)

    stage = {"at": "open"}
    try:
        result = (run_reference if "cases" in job else run_job)(job, step, stage)
    except SmatError as err:
        result = {"status": f"error: {err}", "stage": stage["at"]}
    except MemoryError:
        result = {"status": "error: out of memory", "stage": stage["at"]}
    except Exception as err:  # an engine crashing mid-run is a row in the table, not a traceback
        detail = (str(err).strip().splitlines() or [""])[0]
        result = {"status": f"error: unexpected {type(err).__name__}: {detail}", "stage": stage["at"]}
    print("result " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

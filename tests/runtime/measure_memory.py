"""Measure one engine call's peak working memory in this fresh process: ``python measure_memory.py JOB_JSON``.

Prints one JSON line: the peak resident memory the call added (``VmHWM`` after ``clear_refs`` reset it to the
resident memory just before the call), and for a pair the embed's and a click's. Linux only.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def _status(key: str) -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no {key} in /proc/self/status")


def _peak_of(call) -> float:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")  # the peak (VmHWM) restarts from the resident memory now
    before = _status("VmRSS:")
    call()
    return _status("VmHWM:") - before


def main(job: dict) -> dict:
    batch, height, width = job["batch"], job["height"], job["width"]
    rng = np.random.default_rng(0)
    image = rng.random((batch, 3, height, width), dtype=np.float32)
    prompt = np.zeros((batch, 1, height, width), np.float32)
    prompt[:, :, height // 3 : height // 2, width // 3 : width // 2] = 1
    if job["kind"] == "whole":
        from smat_deploy.runtime import Runtime

        runtime = Runtime.open(job["engine"], backend=job["backend"], device="cpu")
        work = _peak_of(lambda: runtime(image, prompt))
        return {"work_mb": work, "predicted_mb": runtime.backend.estimate_memory(batch, height, width).total_mb}
    from smat_deploy.runtime import Predictor

    predictor = Predictor.open(job["engine"], backend=job.get("backend"), device="cpu")
    profile = predictor.encoder.memory_profile
    held = {}
    embed = _peak_of(lambda: held.setdefault("embedding", predictor.embed(image)))
    click = _peak_of(lambda: predictor.predict(held["embedding"], prompt))
    return {
        "embed_mb": embed,
        "click_mb": click,
        "predicted_embed_mb": profile.estimate(batch, height, width, "encoder").total_mb,
        "predicted_click_mb": profile.estimate(batch, height, width, "decoder").total_mb,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))

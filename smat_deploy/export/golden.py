"""Golden data in Polygraphy's JSON format: inputs and reference outputs for later engine checks.

On a machine with TensorRT, an engine is compared against these with Polygraphy alone::

    polygraphy run engines/smat.plan --model-type engine --trt \\
        --load-inputs golden/inputs.json --load-outputs golden/outputs.json --atol 1e-3 --rtol 0
"""

from __future__ import annotations

from pathlib import Path

import torch
from polygraphy.comparator import RunResults
from polygraphy.comparator.struct import IterationResult
from polygraphy.json import save_json
from polygraphy.logger import G_LOGGER

from smat_deploy._files import atomic_output
from smat_deploy.data.cases import ParityCase
from smat_deploy.model import SMat

REFERENCE_RUNNER = "pytorch-reference"


def save_golden(directory: str | Path, model: SMat, cases: list[ParityCase]) -> tuple[Path, Path]:
    """Write ``inputs.json`` (one feed dict per case) and ``outputs.json`` (reference ``RunResults``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    feeds = [case.feed() for case in cases]
    iterations = []
    for case in cases:
        with torch.inference_mode():
            alpha = model(*(torch.from_numpy(a) for a in (case.image, case.prompt, case.state))).numpy()
        iterations.append(IterationResult(outputs={"alpha": alpha}, runner_name=REFERENCE_RUNNER))
    results = RunResults()
    results.append((REFERENCE_RUNNER, iterations))
    inputs_path, outputs_path = directory / "inputs.json", directory / "outputs.json"
    with G_LOGGER.verbosity(G_LOGGER.ERROR):  # Polygraphy logs each save under the temporary name
        with atomic_output(inputs_path) as tmp:
            save_json(feeds, str(tmp), description="SMat golden inputs")
        with atomic_output(outputs_path) as tmp:
            results.save(str(tmp))
    return inputs_path, outputs_path

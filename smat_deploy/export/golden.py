"""Golden data in Polygraphy's JSON format: inputs and reference outputs for later engine checks.

On a machine with TensorRT, an engine is compared against these with Polygraphy alone::

    polygraphy run engines/smat.plan --model-type engine --trt \\
        --load-inputs golden/inputs.json --load-outputs golden/outputs.json --atol 1e-3 --rtol 0

Polygraphy is imported only here, when golden data is written (``export --save-golden``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from smat_deploy._files import atomic_output
from smat_deploy.data.cases import ParityCase
from smat_deploy.model import SMat

REFERENCE_RUNNER = "pytorch-reference"


def save_golden(directory: str | Path, model: SMat, cases: list[ParityCase]) -> tuple[Path, Path]:
    """Write ``inputs.json`` (one feed dict per case) and ``outputs.json`` (reference ``RunResults``)."""
    outputs = []
    for case in cases:
        with torch.inference_mode():
            alpha = model(*(torch.from_numpy(a) for a in (case.image, case.prompt, case.state))).numpy()
        outputs.append({"alpha": alpha})
    return _save(Path(directory), [case.feed() for case in cases], outputs, "SMat golden inputs")


def _save(directory: Path, feeds: list[dict], outputs: list[dict], description: str) -> tuple[Path, Path]:
    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.json import save_json
    from polygraphy.logger import G_LOGGER

    directory.mkdir(parents=True, exist_ok=True)
    results = RunResults()
    results.append((REFERENCE_RUNNER, [IterationResult(outputs=o, runner_name=REFERENCE_RUNNER) for o in outputs]))
    inputs_path, outputs_path = directory / "inputs.json", directory / "outputs.json"
    with G_LOGGER.verbosity(G_LOGGER.ERROR):  # Polygraphy logs each save under the temporary name
        with atomic_output(inputs_path) as tmp:
            save_json(feeds, str(tmp), description=description)
        with atomic_output(outputs_path) as tmp:
            results.save(str(tmp))
    return inputs_path, outputs_path


def save_pair_golden(directory: str | Path, model: SMat, cases: list[ParityCase]) -> dict[str, tuple[Path, Path]]:
    """Golden data for the interactive pair: ``encoder/`` (image -> embedding) and ``decoder/`` (embedding,
    prompt, state -> alpha), each an ``inputs.json`` / ``outputs.json`` pair in Polygraphy's format."""
    from smat_deploy.contract import EMBEDDING_NAMES
    from smat_deploy.model.pair import pair_embedding

    directory = Path(directory)
    encoder_feeds, encoder_outputs, decoder_feeds, decoder_outputs = [], [], [], []
    for case in cases:
        image, prompt, state = (torch.from_numpy(a) for a in (case.image, case.prompt, case.state))
        with torch.inference_mode():
            embedding = model.embed(image)
            alpha = model.decode(embedding, prompt, state).numpy()
            exported = pair_embedding(model, embedding)
        tensors = {n: t.contiguous().numpy() for n, t in zip(EMBEDDING_NAMES, exported, strict=True)}
        encoder_feeds.append({"image": case.image})
        encoder_outputs.append(tensors)
        decoder_feeds.append({**tensors, "prompt": case.prompt, "state": case.state})
        decoder_outputs.append({"alpha": alpha})
    return {
        "encoder": _save(directory / "encoder", encoder_feeds, encoder_outputs, "SMat encoder golden inputs"),
        "decoder": _save(directory / "decoder", decoder_feeds, decoder_outputs, "SMat decoder golden inputs"),
    }

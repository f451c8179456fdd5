"""``smat-deploy demo`` writes the sample, alphas and cutouts and says which weights it used."""

import json

import numpy as np
from PIL import Image


def test_demo_writes_alphas_and_cutouts(run_cli, tmp_path):
    result = run_cli("demo", "--out", tmp_path, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert "NOT trained" in summary["weights"] and "seed 0" in summary["weights"]
    assert [row["mode"] for row in summary["results"]] == ["auto", "point"]
    for row in summary["results"]:
        assert np.asarray(Image.open(row["alpha"])).shape == (378, 504)
        assert np.asarray(Image.open(row["cutout"])).shape == (378, 504, 4)

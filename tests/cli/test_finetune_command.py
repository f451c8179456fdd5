"""``smat-deploy finetune`` through the real entry point: a tiny run, resuming, and every bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from smat_deploy.model import load_model, save_checkpoint

TINY = ("--steps", "2", "--size", "70", "--batch", "2")


def test_help_shows_an_example(run_cli):
    result = run_cli("finetune", "--help")
    assert result.code == 0
    assert "smat-deploy finetune --synthetic" in result.stdout and "--resume" in result.stdout


def test_tiny_synthetic_run_then_resume(run_cli, tmp_path):
    out = tmp_path / "ft.pth"
    first = run_cli("finetune", "--synthetic", "3", *TINY, "--eval", "1", "--output", out, "--json")
    assert first.code == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["steps"] == [0, 2] and summary["output"] == str(out)
    assert set(summary["heldout"]["mad_before"]) == {"none", "box"}
    assert 0 <= summary["heldout"]["mad_after"]["none"] <= 1
    assert summary["config"]["prompt_kinds"] == ["none", "point", "box", "scribble", "mask"]
    assert torch.load(out, weights_only=True)["iteration"] == 2

    more = run_cli("finetune", "--synthetic", "3", "--steps", "3", "--size", "70", "--resume", out, "--output", out)
    assert more.code == 0, more.stderr
    assert "steps 2->3" in more.stdout and f"checkpoint: {out}" in more.stdout
    assert torch.load(out, weights_only=True)["iteration"] == 3


def test_folder_run_reports_skipped_samples(run_cli, tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("image", "alpha"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for stem in ("a", "b"):
        Image.fromarray((rng.random((90, 100, 3)) * 255).astype(np.uint8)).save(tmp_path / "data/image" / f"{stem}.jpg")
    Image.fromarray((rng.random((90, 100)) > 0.5).astype(np.uint8) * 255).save(tmp_path / "data/alpha/a.png")
    result = run_cli(
        "finetune",
        "--data",
        tmp_path / "data",
        *TINY,
        "--prompts",
        "none,box",
        "--output",
        tmp_path / "f.pth",
        "--json",
    )
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["skipped"] == {"no alpha file in alpha/": 1}
    assert "1 image/alpha pairs" in summary["data"]
    assert "warning: skipped 1 sample(s)" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--steps", "2"), "exactly one data source"),
        (("--synthetic", "2", "--data", "x", "--steps", "2"), "exactly one data source"),
        (("--synthetic", "2", "--steps", "0"), "--steps must be at least 1"),
        (("--synthetic", "2", "--steps", "2", "--size", "100"), "multiple of 14"),
        (("--synthetic", "2", "--steps", "2", "--prompts", "box,lasso"), "unknown prompt kind"),
        (("--synthetic", "0", "--steps", "2"), "at least 1 composite"),
        (("--synthetic", "2", "--steps", "2", "--eval", "-1"), "--eval must not be negative"),
    ],
)
def test_bad_arguments_are_one_error_line(run_cli, tmp_path, args, message):
    result = run_cli("finetune", *args, "--output", tmp_path / "ft.pth")
    assert result.code != 0
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert not (tmp_path / "ft.pth").exists()


def test_output_folder_must_exist_before_any_work(run_cli, tmp_path):
    result = run_cli("finetune", "--synthetic", "2", *TINY, "--output", tmp_path / "missing" / "ft.pth")
    assert result.code != 0 and "output folder does not exist" in result.stderr


def test_resume_and_checkpoint_are_exclusive(run_cli, tmp_path):
    path = save_checkpoint(load_model(seed=0), tmp_path / "w.pth")
    both = run_cli("finetune", "--synthetic", "2", *TINY, "--resume", path, "-c", path, "--output", tmp_path / "o.pth")
    assert both.code != 0 and "not both" in both.stderr
    plain = run_cli("finetune", "--synthetic", "2", *TINY, "--resume", path, "--output", tmp_path / "o.pth")
    assert plain.code != 0 and "not a training checkpoint" in plain.stderr


def test_resume_of_another_architecture_names_the_problem(run_cli, tmp_path):
    state = load_model(seed=0).state_dict()
    state["decoder.convstream.convs.0.conv.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save({"model": state, "optimizer": {}, "iteration": 1}, tmp_path / "other.pth")
    result = run_cli(
        "finetune", "--synthetic", "2", *TINY, "--resume", tmp_path / "other.pth", "--output", tmp_path / "o.pth"
    )
    assert result.code != 0
    assert "mis-shaped 1 key(s): decoder.convstream.convs.0.conv.weight [64, 3, 3, 3]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

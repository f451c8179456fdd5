"""Fine-tuning runs: checkpoint format, determinism, exact resumption, and refusals."""

import copy
import shutil

import pytest
import torch

from smat_deploy.data import SyntheticComposites
from smat_deploy.errors import SmatError
from smat_deploy.model import load_model, save_checkpoint
from smat_deploy.train import FinetuneConfig, finetune, read_resume_state

SIZE = 70
DATA = SyntheticComposites(6, SIZE)


@pytest.fixture(scope="module")
def seeded():
    return load_model(seed=0)


def _run(seeded, out, resume_from=None, **overrides):
    settings = {"steps": 2, "batch_size": 2, "size": SIZE, "lr": 1e-3, **overrides}
    model = copy.deepcopy(seeded)
    resume = read_resume_state(resume_from, model) if resume_from else None
    return model, finetune(model, DATA, FinetuneConfig(**settings), out, resume=resume)


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def four_steps(seeded, tmp_path_factory):
    """A 4-step run saving every 2 steps, with a copy of its step-2 checkpoint: (model, result, final, step 2)."""
    folder = tmp_path_factory.mktemp("run")
    out, snapshot = folder / "run.pth", folder / "step2.pth"

    def keep_step_two(step, losses):
        if step == 3:  # the step-2 checkpoint was written before step 3 began
            shutil.copy(out, snapshot)

    model = copy.deepcopy(seeded)
    config = FinetuneConfig(steps=4, batch_size=2, size=SIZE, lr=1e-3, save_every=2)
    result = finetune(model, DATA, config, out, on_step=keep_step_two)
    return model, result, out, snapshot


def test_checkpoint_is_official_format_plus_training_state(seeded, four_steps):
    model, result, out, snapshot = four_steps
    raw = torch.load(out, weights_only=True)
    assert {"model", "optimizer", "iteration", "config", "seed", "losses", "data"} <= set(raw)
    assert raw["iteration"] == 4 and raw["losses"] == result.losses and len(result.losses) == 4
    assert raw["config"]["size"] == SIZE and raw["seed"] == 0
    assert torch.load(snapshot, weights_only=True)["iteration"] == 2
    loaded = load_model(out)  # what `matte -c` does
    assert _equal_states(loaded.state_dict(), model.state_dict())
    assert not _equal_states(loaded.state_dict(), seeded.state_dict())


def test_same_seed_same_checkpoint_other_seed_other_checkpoint(seeded, four_steps, tmp_path):
    snapshot = torch.load(four_steps[3], weights_only=True)
    _run(seeded, tmp_path / "same.pth")  # 2 steps, seed 0: must equal the other run's step-2 checkpoint
    _run(seeded, tmp_path / "other.pth", seed=1)
    same, other = (torch.load(tmp_path / f"{n}.pth", weights_only=True) for n in ("same", "other"))
    assert _equal_states(same["model"], snapshot["model"]) and same["losses"] == snapshot["losses"]
    moments = snapshot["optimizer"]["state"]
    assert same["optimizer"]["state"].keys() == moments.keys()
    assert all(torch.equal(same["optimizer"]["state"][i]["exp_avg_sq"], moments[i]["exp_avg_sq"]) for i in moments)
    assert not _equal_states(same["model"], other["model"])


def test_resuming_from_the_periodic_checkpoint_equals_the_uninterrupted_run(seeded, four_steps, tmp_path):
    model, full, _, snapshot = four_steps
    resumed_model, resumed = _run(seeded, tmp_path / "resumed.pth", resume_from=snapshot, steps=4, save_every=2)
    assert (resumed.start_step, resumed.end_step) == (2, 4)
    assert resumed.losses == full.losses
    assert _equal_states(resumed_model.state_dict(), model.state_dict())


def test_resume_refuses_other_architectures_and_plain_weights(seeded, four_steps, tmp_path):
    raw = torch.load(four_steps[2], weights_only=True)
    raw["model"]["decoder.matting_head.matting_convs.0.weight"] = torch.zeros(8, 32, 3, 3)
    del raw["model"]["prompt_cross_attn.layers.0.norm3.bias"]
    torch.save(raw, tmp_path / "other.pth")
    with pytest.raises(SmatError, match=r"missing 1 key\(s\): prompt_cross_attn.layers.0.norm3.bias.*mis-shaped"):
        read_resume_state(tmp_path / "other.pth", copy.deepcopy(seeded))
    save_checkpoint(seeded, tmp_path / "plain.pth")
    with pytest.raises(SmatError, match=r"not a training checkpoint .*use --checkpoint"):
        read_resume_state(tmp_path / "plain.pth", copy.deepcopy(seeded))


def test_resume_refuses_a_finished_run_and_a_changed_freeze_setting(seeded, four_steps, tmp_path):
    final = four_steps[2]
    with pytest.raises(SmatError, match="already at step 4"):
        _run(seeded, tmp_path / "again.pth", resume_from=final, steps=4)
    with pytest.raises(SmatError, match="freeze_backbone=False"):
        _run(seeded, tmp_path / "frozen.pth", resume_from=final, steps=5, freeze_backbone=True)
    assert not any(tmp_path.iterdir())  # refused before writing anything


def test_resume_with_other_settings_warns(seeded, four_steps, tmp_path):
    with pytest.warns(UserWarning, match=r"seed 5 \(checkpoint: 0\)"):
        _run(seeded, tmp_path / "more.pth", resume_from=four_steps[2], steps=5, seed=5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps": 0}, "--steps must be at least 1"),
        ({"size": 100}, "multiple of 14"),
        ({"size": 56}, "at least 70"),
        ({"lr": 0.0}, "--lr must be positive"),
        ({"prompt_kinds": ("lasso",)}, "unknown prompt kinds"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(SmatError, match=message):
        FinetuneConfig(**{"steps": 1, **overrides}).validate()

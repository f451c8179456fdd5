"""Checkpoints: official format round trip, the three accepted layouts, and every refusal."""

import os
import pickle

import pytest
import torch

from smat_deploy.errors import SmatError
from smat_deploy.model import SMat, load_model, save_checkpoint

# SPEC section 2: the official checkpoint's structure.
OFFICIAL_PREFIXES = ("backbone.", "prompt_cross_attn.layers.0.", "decoder.")


def test_official_round_trip_covers_every_key(tmp_path):
    model = load_model(seed=7)
    path = save_checkpoint(model, tmp_path / "smat.pth")
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model"}
    state = raw["model"]
    assert len(state) == 244
    assert all(k.startswith(OFFICIAL_PREFIXES) for k in state)
    assert state["backbone.pos_embed"].shape == (1, 1370, 384)
    loaded = load_model(path, seed=99)  # a different seed: every value must come from the file
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not loaded.training


def test_seeded_models_are_deterministic_and_seed_dependent():
    a, b, c = load_model(seed=1), load_model(seed=1), load_model(seed=2)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.state_dict()["backbone.pos_embed"], c.state_dict()["backbone.pos_embed"])


def test_bare_state_dict_and_optional_mask_token(tmp_path):
    state = load_model(seed=3).state_dict()
    del state["backbone.mask_token"]
    torch.save(state, tmp_path / "bare.pth")
    loaded = load_model(tmp_path / "bare.pth")
    assert torch.equal(loaded.state_dict()["backbone.pos_embed"], state["backbone.pos_embed"])


def test_backbone_only_weights_load_with_a_warning(tmp_path):
    source = load_model(seed=4)
    backbone = source.backbone.state_dict()  # DINOv2 names, no prefix
    torch.save(backbone, tmp_path / "dinov2_vits14_pretrain.pth")
    with pytest.warns(UserWarning, match="backbone weights only"):
        loaded = load_model(tmp_path / "dinov2_vits14_pretrain.pth", seed=5)
    for key, value in backbone.items():
        assert torch.equal(loaded.backbone.state_dict()[key], value)
    seeded = load_model(seed=5)
    key = "decoder.fusion_blks.0.conv.conv.weight"
    assert torch.equal(loaded.state_dict()[key], seeded.state_dict()[key])


def _official(tmp_path, mutate):
    state = load_model(seed=0).state_dict()
    mutate(state)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("decoder.matting_head.matting_convs.3.weight"), r"missing 1 key\(s\): decoder.matting_head"),
        (lambda s: s.update({"decoder.extra.weight": torch.zeros(1)}), r"unexpected 1 key\(s\): decoder.extra.weight"),
        (
            lambda s: s.update({"backbone.pos_embed": torch.zeros(1, 10, 384)}),
            r"mis-shaped 1 key\(s\): backbone.pos_embed",
        ),
    ],
)
def test_wrong_keys_are_named(tmp_path, mutate, message):
    with pytest.raises(SmatError, match=message):
        load_model(_official(tmp_path, mutate))


def test_many_wrong_keys_give_one_summarised_error(tmp_path):
    path = _official(tmp_path, lambda s: [s.pop(k) for k in [k for k in s if k.startswith("decoder.")]])
    with pytest.raises(SmatError, match=r"missing 51 key\(s\): .* and 45 more"):
        load_model(path)


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"model": _Exploit(str(marker))}, handle)
    with pytest.raises(SmatError, match="refusing to load"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a checkpoint at all", "not a readable PyTorch checkpoint"), (None, "checkpoint not found")],
)
def test_unreadable_checkpoints(tmp_path, content, message):
    path = tmp_path / "x.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SmatError, match=message):
        load_model(path)


def test_foreign_dicts_and_non_dicts_are_refused(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "foreign.pth")
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    with pytest.raises(SmatError, match="not an SMat or DINOv2 checkpoint"):
        load_model(tmp_path / "foreign.pth")
    with pytest.raises(SmatError, match="expected a dict"):
        load_model(tmp_path / "list.pth")


def test_save_replaces_atomically_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = save_checkpoint(load_model(seed=0), tmp_path / "smat.pth")
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(RuntimeError):
        save_checkpoint(load_model(seed=1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["smat.pth"]
    assert isinstance(load_model(path), SMat)


def test_default_weights_give_a_varying_alpha_and_plain_seeded_ones_do_not():
    from smat_deploy.data.synthetic import make_composite
    from smat_deploy.model.checkpoint import build_model

    sample = make_composite((140, 182), seed=123)
    image = torch.from_numpy(sample.image).permute(2, 0, 1)[None]
    prompt = torch.zeros(1, 1, 140, 182)
    with torch.no_grad():
        default = load_model(seed=0)(image, prompt)
        plain = build_model(seed=0).eval()(image, prompt)
    assert default.std() > 0.05
    assert plain.std() < 0.01

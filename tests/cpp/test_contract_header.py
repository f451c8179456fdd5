"""cpp/src/contract.hpp is what smat_deploy.contract_cpp generates from the Python contract."""

from smat_deploy import contract_cpp
from smat_deploy.export.manifest import MANIFEST_FORMAT


def test_the_committed_header_is_the_generated_one():
    assert contract_cpp.HEADER.read_text(encoding="utf-8") == contract_cpp.render(), (
        "cpp/src/contract.hpp is stale: run python -m smat_deploy.contract_cpp --write"
    )


def test_the_header_states_the_contract_facts():
    text = contract_cpp.render()
    assert f'kManifestFormat = "{MANIFEST_FORMAT}";' in text
    assert "inline constexpr int kMinSide = 14;" in text
    assert '{"whole", {"image", "prompt", "state"}, 3, {"alpha"}, 1},' in text
    assert '{"fp16", "smat_fp16.onnx", "smat_encoder_fp16.onnx", "smat_decoder_fp16.onnx"},' in text

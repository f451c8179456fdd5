"""One format for image sizes on every command line: WIDTHxHEIGHT, N for NxN; batches are their own option."""

import pytest

from smat_deploy.cli._shapes import ImageSize, parse_batches, parse_image_size, parse_image_sizes
from smat_deploy.contract import MIN_SIDE
from smat_deploy.errors import SmatError


def test_width_by_height_and_a_bare_side():
    assert parse_image_size("1024x768", "--size") == ImageSize(1024, 768)
    assert parse_image_size(" 640 X 480 ", "--size") == (640, 480)
    assert parse_image_size("518", "--size") == ImageSize(518, 518)
    assert str(ImageSize(1560, 1040)) == "1560x1040"
    assert parse_image_sizes("518x518, 1560X1040,518", "--sizes") == [(518, 518), (1560, 1040)]


@pytest.mark.parametrize("text", ["518x", "axb", "518x518;1024x768", "", "1.5x20", "4x518x518", "-14"])
def test_malformed_sizes_name_the_option_and_the_format(text):
    with pytest.raises(SmatError, match="--sizes must be WIDTHxHEIGHT, or N for NxN"):
        parse_image_sizes(text, "--sizes")


def test_each_side_is_at_least_one_patch():
    assert parse_image_size(f"{MIN_SIDE}x{MIN_SIDE}", "--min") == (MIN_SIDE, MIN_SIDE)
    for text in (f"{MIN_SIDE - 1}x518", str(MIN_SIDE - 1)):
        with pytest.raises(SmatError, match=f"--min .*both sides must be at least {MIN_SIDE} pixels"):
            parse_image_size(text, "--min")


def test_square_only_options_take_n_or_nxn():
    assert parse_image_size("224", "--size", square=True) == (224, 224)
    assert parse_image_size("224x224", "--size", square=True) == (224, 224)
    with pytest.raises(SmatError, match=r"--size takes a square size \(N or NxN\), got 224x160"):
        parse_image_size("224x160", "--size", square=True)


def test_batches():
    assert parse_batches("1,4,1", "--batch") == [1, 4, 1]
    assert parse_batches("1,1,4", "--batch", count=3) == [1, 1, 4]
    for text in ["0", "1,x", "-2", ""]:
        with pytest.raises(SmatError, match="--batch"):
            parse_batches(text, "--batch")
    with pytest.raises(SmatError, match="--batch takes 3 values"):
        parse_batches("1,4", "--batch", count=3)


def test_build_takes_the_same_sizes_and_a_batch_option(run_cli, tmp_path):
    """build checks its profile before looking for TensorRT or the ONNX file."""
    run_cli("build", "--onnx", tmp_path / "m.onnx", "--max", "1x14x14").expect_error("--max must be WIDTHxHEIGHT")
    run_cli("build", "--onnx", tmp_path / "m.onnx", "--batch", "1,4").expect_error("--batch takes 3 values")
    run_cli("build", "--onnx", tmp_path / "m.onnx", "--min", "600", "--opt", "518").expect_error("min <= opt <= max")

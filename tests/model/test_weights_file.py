"""Telling a whole weights file from a cut-off one or a web page, from its header alone."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dreambooth_core.model.weights_file import WeightsFileProblem, safetensors_shapes, weights_file_problem

PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in</body></html>"


@pytest.fixture
def safetensors_file(tmp_path) -> Path:
    path = tmp_path / "model.safetensors"
    save_file({"conv.weight": torch.ones(8, 4, 3, 3), "conv.bias": torch.ones(8)}, str(path))
    return path


def test_the_shapes_of_a_whole_safetensors_file(safetensors_file):
    assert safetensors_shapes(safetensors_file) == {"conv.weight": [8, 4, 3, 3], "conv.bias": [8]}
    assert weights_file_problem(safetensors_file) is None


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.99])  # the header itself cut, the tensors cut
def test_a_cut_off_safetensors_file_is_named_truncated(keep, safetensors_file):
    data = safetensors_file.read_bytes()
    safetensors_file.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(WeightsFileProblem, match=r"cut off: .* \(truncated"):
        safetensors_shapes(safetensors_file)


@pytest.mark.parametrize(("name", "says"), [
    ("model.safetensors", "not a safetensors file but an HTML page (it starts with '<!DOCTYPE html> <html>"),
    ("model.ckpt", "not a PyTorch checkpoint but an HTML page"),
])
def test_a_web_page_is_named_for_what_it_is(name, says, tmp_path):
    (tmp_path / name).write_bytes(PAGE)
    problem = weights_file_problem(tmp_path / name)
    assert problem.startswith(says), problem
    assert "code" not in problem


def test_text_and_random_bytes_are_told_apart(tmp_path):
    (tmp_path / "error.ckpt").write_bytes(b'{"error": "Repository not found"}')
    (tmp_path / "noise.ckpt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    assert weights_file_problem(tmp_path / "error.ckpt") == \
        "not a PyTorch checkpoint but text (it starts with '{\"error\": \"Repository not found\"}')"
    assert "neither a zip archive (what torch.save writes) nor a pickle" in \
        weights_file_problem(tmp_path / "noise.ckpt")
    assert weights_file_problem(tmp_path / "empty.ckpt") == "not a PyTorch checkpoint but an empty file"


def test_both_forms_of_torch_save_pass_and_a_cut_off_zip_does_not(tmp_path):
    state = {"state_dict": {"w": torch.ones(1000)}}
    torch.save(state, tmp_path / "zip.ckpt")
    torch.save(state, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "zip.ckpt").read_bytes()[:2000])

    assert weights_file_problem(tmp_path / "zip.ckpt") is None
    assert weights_file_problem(tmp_path / "legacy.ckpt") is None
    assert "zip archive (the form torch.save writes) that is cut off (truncated" in \
        weights_file_problem(tmp_path / "cut.ckpt")


def test_the_suffix_may_be_given_for_a_file_still_named_part(safetensors_file, tmp_path):
    part = tmp_path / "model.safetensors.part"
    part.write_bytes(safetensors_file.read_bytes())
    assert weights_file_problem(part, ".safetensors") is None
    assert weights_file_problem(part) is not None  # judged as a .ckpt, which it is not

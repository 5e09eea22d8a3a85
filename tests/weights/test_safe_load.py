"""Every checkpoint read goes through :mod:`vfmkit.weights.safe_load`: timm's weights files (the CNN main backbone
of detect, the timm backbone family) included, so a damaged file is one WeightsError line saying what was wrong,
without torch's advice to load unsafely or a torch warning (reliability audit 2: N9, N14)."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
from safetensors.torch import save_file

from vfmkit.errors import WeightsError
from vfmkit.models.backbones.timm_cnn import TimmCNN
from vfmkit.weights.safe_load import load_safetensors


@pytest.mark.parametrize("content", [b"", bytes(range(256)) * 8], ids=["empty", "random-bytes"])
def test_timm_weights_are_read_by_the_safe_reader(tmp_path, content) -> None:
    """N9 / N14: timm used to read the file itself (an empty one raised EOFError, random bytes torch's advice to
    load unsafely, with a UserWarning on stderr)."""
    bad = tmp_path / "resnet18.pth"
    bad.write_bytes(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsError) as info:
            TimmCNN("timm:resnet18", checkpoint=bad, pretrained=True)
    message = str(info.value)
    assert message.startswith(f"{bad}: not a readable checkpoint (")
    assert "weights_only" not in message and "Re-running" not in message and "\n" not in message
    assert "(the file is empty)" in message if not content else "vfmkit reads .safetensors files" in message
    assert not caught, [str(w.message) for w in caught]


def test_timm_weights_unwrapped_as_timm_does(tmp_path) -> None:
    reference = timm.create_model("resnet18")
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}, "epoch": 3}, wrapped)
    cnn = TimmCNN("timm:resnet18", checkpoint=wrapped, pretrained=True)
    torch.testing.assert_close(cnn.model.conv1.weight, reference.conv1.weight, rtol=0, atol=0)


def test_an_empty_safetensors_file_says_so(tmp_path) -> None:
    empty = tmp_path / "model.safetensors"
    empty.touch()
    with pytest.raises(WeightsError, match=r"model\.safetensors: not a readable safetensors file \(the file is empty"):
        load_safetensors(empty)
    save_file({"a": torch.zeros(2)}, str(tmp_path / "ok.safetensors"))
    assert load_safetensors(tmp_path / "ok.safetensors")["a"].shape == (2,)

"""A Hub endpoint that accepts connections but never answers: `vfm` says what it fetches from where before waiting,
and fails after the timeout with one line naming the repo and the endpoint (huggingface_hub alone retries for
about 400 s, silent for the first minute)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from tests.reliability.helpers import assert_one_line_error, cli_env, run_vfm

from vfmkit.errors import WeightsError
from vfmkit.models.backbones import timm_family
from vfmkit.weights import sources
from vfmkit.weights.sources import HubUnreachableError, fetch_hub_file, hub_timeout, parse_hub

HANG_LIMIT_S = 90  # far above the 1 s timeout + start-up, far below the ~400 s huggingface_hub waits on its own


@pytest.fixture()
def silent_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:<port>``: connections are accepted (by the kernel backlog) and never answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_silent_endpoint_fails_fast_with_one_line(silent_endpoint: str, tmp_path) -> None:
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    env = cli_env(HF_ENDPOINT=silent_endpoint, HF_HUB_ETAG_TIMEOUT="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    env.pop("HF_HUB_OFFLINE", None)
    out = tmp_path / "e.safetensors"
    result = run_vfm(
        "embed", tmp_path / "a.png", "--model", "hf-hub:acme/radio-x", "-o", out, env=env, timeout=HANG_LIMIT_S
    )
    lines = result.stderr.strip().splitlines()
    fetching = [i for i, line in enumerate(lines) if line.startswith("fetching ")]
    assert fetching and "hf-hub:acme/radio-x" in lines[fetching[0]] and silent_endpoint in lines[fetching[0]], lines
    error = "\n".join(lines[fetching[0] + 1 :])
    line = assert_one_line_error(result.returncode, error, "hf-hub:acme/radio-x", silent_endpoint, "did not answer")
    assert "HF_HUB_ETAG_TIMEOUT" in line and not out.exists()


def test_offline_fails_without_a_network_wait(capsys) -> None:
    """conftest sets HF_HUB_OFFLINE=1: the error says so, and nothing announces a fetch."""
    with pytest.raises(WeightsError, match="HF_HUB_OFFLINE") as info:
        fetch_hub_file(parse_hub("hf-hub:acme/radio-x"), "config.json")
    assert "acme/radio-x" in str(info.value)
    assert "fetching" not in capsys.readouterr().err


def test_a_refused_connection_is_reported_as_unreachable(monkeypatch, capsys) -> None:
    import huggingface_hub
    import huggingface_hub.constants as constants

    def refuse(url, timeout):
        assert timeout == 3.0
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", refuse)
    with pytest.raises(HubUnreachableError, match="could not be reached") as info:
        fetch_hub_file(parse_hub("hf-hub:acme/radio-x@v2"), "model.safetensors")
    assert "hf-hub:acme/radio-x@v2" in str(info.value) and constants.ENDPOINT in str(info.value)
    assert capsys.readouterr().err.startswith(
        f"fetching model.safetensors of hf-hub:acme/radio-x@v2 from {constants.ENDPOINT}"
    )


def test_an_unreachable_hub_stops_at_the_first_weights_file(monkeypatch) -> None:
    """timm repos have two candidate files; a silent endpoint must not be waited on twice."""
    calls = []

    def unreachable(ref, filename):
        calls.append(filename)
        raise HubUnreachableError(f"{filename} of hf-hub:{ref.repo}: http://x did not answer within 1 s")

    monkeypatch.setattr(timm_family, "fetch_hub_file", unreachable)
    with pytest.raises(WeightsError, match="did not answer"):
        timm_family.fetch_hub_weights("hf-hub:timm/some-vit", "some-vit")
    assert calls == ["model.safetensors"]


@pytest.mark.parametrize("value", [None, "2.5", "0", "soon"])
def test_hub_timeout_reads_hf_hub_etag_timeout(monkeypatch, value) -> None:
    if value is None:
        monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", value)
    assert hub_timeout() == (2.5 if value == "2.5" else sources.DEFAULT_HUB_TIMEOUT_S)

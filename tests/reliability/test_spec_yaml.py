"""A key written twice in a spec is refused (YAML would silently keep the last), naming the key and both lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from vfmkit.spec.loader import SpecError, read_yaml


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key", "lines"),
    [
        ("name: a\ntrain:\n  epochs: 3\n  lr: 0.1\n  epochs: 30\n", "train.epochs", (3, 5)),
        ("name: a\nmodel: {backbone: x}\nname: b\n", "name", (1, 3)),
        ("train: {epochs: 3, epochs: 4}\n", "train.epochs", (1, 1)),
        ("model:\n  backbone: x\ntrain:\n  epochs: 1\nmodel:\n  neck: y\n", "model", (1, 5)),
        ("augment:\n  steps:\n    - {flip: 1, flip: 2}\n", "augment.steps[0].flip", (3, 3)),
    ],
    ids=["nested", "top-level", "flow", "section", "in-a-list"],
)
def test_duplicate_keys_are_refused(tmp_path: Path, text: str, key: str, lines: tuple[int, int]) -> None:
    path = _spec(tmp_path, text)
    with pytest.raises(SpecError) as info:
        read_yaml(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and f"'{key}'" in message, message
    assert f"line {lines[0]}" in message and f"line {lines[1]}" in message, message


def test_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    text = "defaults: &d\n  epochs: 3\n  lr: 0.1\ntrain:\n  <<: *d\n  epochs: 5\n"
    assert read_yaml(_spec(tmp_path, text))["train"] == {"epochs": 5, "lr": 0.1}


def test_equal_keys_in_different_sections_are_fine(tmp_path: Path) -> None:
    text = "train:\n  batch_size: 8\nevaluate:\n  batch_size: 16\n"
    assert read_yaml(_spec(tmp_path, text)) == {"train": {"batch_size": 8}, "evaluate": {"batch_size": 16}}

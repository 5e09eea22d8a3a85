"""``weights.json`` and the model card's "Weights" section: what the engine records about every backbone's weights
(the card used to say "weights: random initialisation" whenever a registry model was not loaded from its published
source, even when a checkpoint file had been named)."""

from __future__ import annotations

from vfmkit.engine.model_card import write_model_card
from vfmkit.engine.weights import WEIGHTS_FILE, read_weights_json, write_weights_json
from vfmkit.weights.record import WeightsRecord

FILE = "/data/weights/c-radio-v3-b-domain.pth.tar"
RECORDS = [
    WeightsRecord("backbone", "c-radio-v3-b", "checkpoint file", FILE, "a" * 64, ((FILE, "b" * 64),)),
    WeightsRecord("teacher:t", "test-radio-v3-tiny", "test variant", "test variant, seed 0", "c" * 64),
]


def _card(tmp_path, weights) -> str:
    path = write_model_card(tmp_path, "distill", "c-radio-v3-b", weights, {}, {"knn_top1": 0.5}, "0" * 64)
    return path.read_text()


def test_the_run_record_round_trips_and_the_card_lists_every_role(tmp_path) -> None:
    write_weights_json(tmp_path, RECORDS, init_from=None)
    assert read_weights_json(tmp_path) == (RECORDS, None)
    card = _card(tmp_path, read_weights_json(tmp_path))
    assert f"- weights: checkpoint file: {FILE}" in card and "random initialisation" not in card
    assert f"- backbone: `c-radio-v3-b`, checkpoint file: {FILE}; weights sha256 `{'a' * 64}`; file `{FILE}`" in card
    assert "- teacher:t: `test-radio-v3-tiny`, test variant: test variant, seed 0" in card


def test_init_from_and_runs_without_a_record_say_so(tmp_path) -> None:
    write_weights_json(tmp_path, RECORDS[:1], init_from=tmp_path / "earlier" / "best.ckpt")
    assert "then the whole model started from the weights of" in _card(tmp_path, read_weights_json(tmp_path))
    (tmp_path / WEIGHTS_FILE).write_text("{not json")
    assert read_weights_json(tmp_path) is None
    card = _card(tmp_path, None)
    assert "- weights: not recorded" in card and "no weights.json" in card

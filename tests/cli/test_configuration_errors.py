"""A configuration a user can fix ends in one `error:` line naming the key to change, exit code 2, nothing written:
checked on the meta device before any weights are fetched."""

from __future__ import annotations

import pytest
from tests.synthetic import make_segmentation_dataset

from vfmkit.cli.main import main


def test_a_neck_the_backbone_does_not_support_is_one_line_exit_2(tmp_path, capsys) -> None:
    data = make_segmentation_dataset(tmp_path / "data", {"train": 2, "val": 1}, size=32)
    palette = "[{name: background, id: 0}, {name: circle, id: 1}, {name: square, id: 2}]"
    args = [
        "segment",
        "train",
        f"dataset.root={data}",
        f"dataset.palette={palette}",
        f"results_dir={tmp_path / 'runs'}",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "model.backbone=eva02-clip-l14"])  # default neck: vit_adapter (EVA has rotary blocks)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: model.neck 'vit_adapter' does not support")
    assert "model.neck to simple_pyramid" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("task", ["classify", "segment", "change", "detect", "universal", "distill"])
def test_an_empty_backbone_name_is_refused_by_every_task_spec(task) -> None:
    from vfmkit.spec.loader import SpecError, load_spec
    from vfmkit.tasks import get_task

    with pytest.raises(SpecError, match="model.backbone"):
        load_spec(get_task(task).spec_class, None, ["model.backbone="])

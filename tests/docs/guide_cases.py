"""Per guide page: the data its runnable commands expect, and how the test makes them tiny.

A page with runnable blocks (see ``docs/_gen/runnable.py``) needs a :class:`GuideCase` here (a test fails until it
has one). ``setup`` makes the page's data in its work folder, ``replace`` swaps whole words of the commands and the
written files (the published model ids for tiny random ones), and ``append`` adds overrides to every command whose
path starts with the key (a later ``key=value`` or option wins over the page's own).
"""

from __future__ import annotations

import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tests.synthetic import make_segmentation_dataset, make_shapes_dataset
from tests.tasks.change.change_data import make_levir
from tests.tasks.clip.clip_data import write_caption_folders, write_class_folders
from tests.tasks.contract_cases import CASES, COMMON
from tests.tasks.detect.detect_data import make_detection_dataset
from tests.tasks.distill.distill_data import make_pattern_dataset
from tests.tasks.universal.universal_data import make_panoptic_dataset

TINY = "test-radio-v2-tiny"
TINY_MODELS = {"c-radio-v3-b": TINY, "c-radio-v3-h": TINY, "c-radio-v3-l": TINY}
"""The published ids the guides show -> the tiny random-init variant the tests run."""
SHORT = [*COMMON, "train.epochs=1"]
"""Every task command: no workers, one short epoch, small batches."""


@dataclass
class GuideCase:
    """How to run one guide page's commands.

    Attributes:
        setup: makes the data under the work folder.
        append: command path prefix (``("classify",)``) -> overrides appended to those commands.
        replace: whole words replaced in the commands and the written files.
        slow: the page's run takes long (marked ``slow``).
        own_processes: run each command as its own ``vfm`` process (DDP launches its workers by re-running the
            command line, which the one-process batch of the other pages is not).
    """

    setup: Callable[[Path], None]
    append: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    replace: dict[str, str] = field(default_factory=lambda: dict(TINY_MODELS))
    slow: bool = True
    own_processes: bool = False


def _task(task: str, variant: str | None = None) -> list[str]:
    return [*SHORT, *CASES[(task, variant)].extra]


def _shapes(root: Path) -> None:
    make_shapes_dataset(root / "data", {"train": 3, "val": 2}, size=32)
    shutil.copytree(root / "data" / "val", root / "photos")


def _classify_spec(root: Path) -> None:
    _shapes(root)
    (root / "cls.yaml").write_text(f"task: classify\nmodel: {{backbone: {TINY}}}\ndataset: {{root: data}}\n")


def _segment(root: Path) -> None:
    make_segmentation_dataset(root / "data", {"train": 6, "val": 3}, size=32)
    shutil.copytree(root / "data" / "images" / "val", root / "photos")


def _change(root: Path) -> None:
    make_levir(root / "data", {"train": 6, "val": 3}, size=32)


def _detect(root: Path) -> None:
    make_detection_dataset(root / "data" / "train", num_images=6, size=64, seed=0)
    make_detection_dataset(root / "data" / "val", num_images=3, size=64, seed=1, negatives=1)
    shutil.copytree(root / "data" / "val" / "images", root / "photos")


def _universal(root: Path) -> None:
    make_panoptic_dataset(root / "data", {"train": 6, "val": 3}, size=32)
    shutil.copytree(root / "data" / "images" / "val", root / "photos")


def _clip(root: Path) -> None:
    for split, seed in (("train", 0), ("val", 1)):
        write_caption_folders(root / "data" / split, per_combination=1, seed=seed)
    write_class_folders(root / "labelled", per_combination=1, seed=2)  # also writes classes.txt beside it
    shutil.copytree(root / "data" / "val" / "images", root / "photos")
    (root / "prompts.txt").write_text("a red circle\na blue cross\n")


def _distill(root: Path) -> None:
    data = make_pattern_dataset(root / "data", {"train": 1, "val": 1})
    shutil.copytree(data.unlabeled, root / "unlabeled")
    shutil.copytree(data.by_pattern, root / "labelled")
    shutil.copytree(data.by_colour, root / "control")
    shutil.copytree(root / "data" / "images" / "val", root / "photos")


def _embedding(root: Path) -> None:
    """The shapes images, a JPEG query image, and the validation images again as two WebDataset shards."""
    _shapes(root)
    files = sorted((root / "photos").rglob("*.png"))
    Image.open(files[0]).save(root / "query.jpg", quality=90)
    (root / "shards").mkdir()
    for number, members in enumerate((files[: len(files) // 2], files[len(files) // 2 :])):
        with tarfile.open(root / "shards" / f"{number:05d}.tar", "w") as shard:
            for path in members:
                shard.add(path, arcname=path.name)


def _tao(root: Path) -> None:
    _detect(root)
    shutil.copy(Path(__file__).parents[1] / "spec" / "tao_specs" / "rtdetr.yaml", root / "tao_rtdetr.yaml")


TAO_DATA = [
    f"dataset.{split}_data_sources.0.{key}=data/{folder}/{value}"
    for split, folder in (("train", "train"), ("val", "val"))
    for key, value in (("image_dir", "images"), ("json_file", "annotations.json"))
]
"""The ``???`` data paths of TAO's rtdetr spec, given to ``vfm spec from-tao`` as the guide says."""
TAO_DETECT_TINY = [
    *CASES[("detect", None)].extra,
    *SHORT,
    f"model.backbone={TINY}",
    "model.pretrained=false",
    "model.frozen_fm.enabled=false",
]

DETECT_GUIDE = [*_task("detect"), "predict.conf_threshold=0.0"]

CLIP_TINY = ["model.type=test-radio-clip-tiny", "model.image_size=32"]

GUIDES: dict[str, GuideCase] = {
    "getting-started.md": GuideCase(
        lambda root: make_shapes_dataset(root / "data", {"train": 3, "val": 2}, size=32),
        append={("classify",): _task("classify")},
        slow=False,
    ),
    "tasks/classify.md": GuideCase(_shapes, append={("classify",): _task("classify")}),
    "tasks/segment.md": GuideCase(_segment, append={("segment",): _task("segment")}),
    "tasks/change.md": GuideCase(_change, append={("change",): _task("change", "segment")}),
    "tasks/detect.md": GuideCase(
        _detect,
        append={
            ("detect",): DETECT_GUIDE,
            # RF-DETR's setting at 64 px: patch 16, 2 x 2 windows of 2 x 2 patches
            ("detect", "train", "-c", "det.yaml", "name=lw"): [*DETECT_GUIDE, "model.vitdet_window_size=2"],
        },
        replace={**TINY_MODELS, "dinov2-vit-s14": "test-dinov2-tiny"},
    ),
    "tasks/universal.md": GuideCase(_universal, append={("universal",): _task("universal")}),
    "tasks/clip.md": GuideCase(
        _clip,
        append={("clip", "zeroshot"): ["--resolution", "32"], ("clip", "models"): [], ("clip",): [*SHORT, *CLIP_TINY]},
        replace={"siglip2-so400m-patch16-256": "test-radio-clip-tiny", "c-radio-v3-h": "test-radio-clip-tiny"},
    ),
    "tasks/distill.md": GuideCase(
        _distill, append={("distill",): _task("distill"), ("embed",): ["--resolution", "32"]}
    ),
    "guides/embedding.md": GuideCase(
        _embedding,
        # the tiny RADIO's text-aligned head is `siglip` (paired with test-radio-clip-tiny's text tower)
        replace={**TINY_MODELS, "clip": "siglip"},
    ),
    "guides/backbones.md": GuideCase(lambda root: None),  # `vfm models`: no data
    "guides/fast-inference.md": GuideCase(_shapes, append={("models", "export"): ["--resolution", "64"]}),
    "guides/distributed.md": GuideCase(
        _classify_spec, append={("classify",): [*_task("classify"), "train.accelerator=cpu"]}, own_processes=True
    ),
    "guides/reliability.md": GuideCase(_classify_spec),
    "guides/tao.md": GuideCase(_tao, append={("spec", "from-tao"): TAO_DATA, ("detect",): TAO_DETECT_TINY}),
}
"""Guide page (relative to ``docs/``) -> its case."""


def appended(case: GuideCase, argv: list[str]) -> list[str]:
    """The overrides ``case`` appends to the command ``vfm argv...``: those of the longest matching prefix."""
    for prefix in sorted(case.append, key=len, reverse=True):
        if tuple(argv[: len(prefix)]) == prefix:
            return case.append[prefix]
    return []


def replaced(case: GuideCase, word: str) -> str:
    """A command word with the case's replacements: a whole word, or the value of a ``key=value`` word."""
    if word in case.replace:
        return case.replace[word]
    key, sep, value = word.partition("=")
    if sep and value in case.replace:
        return f"{key}={case.replace[value]}"
    return word


def replaced_text(case: GuideCase, text: str) -> str:
    """A written file's text with the case's replacements (whole words only)."""
    for old, new in case.replace.items():
        text = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", new, text)
    return text

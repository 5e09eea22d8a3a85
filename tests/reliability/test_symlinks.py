"""Images in symlinked sub-folders are found, once, by the one folder walker (embed, pca, knn and the demo use it
through ``list_image_files``); symlink cycles end."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vfmkit.data.images import iter_files, list_image_files
from vfmkit.features.embed import embed_source
from vfmkit.features.knn import list_class_folders

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks on this platform")


def _image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """``root`` with a real image, a symlinked sub-folder (outside the tree) holding nested images, a second link
    to that folder, a link back to an ancestor (a cycle), a link to itself, a hidden link and a broken link."""
    outside = tmp_path / "outside"
    _image(outside / "x.png", 1)
    _image(outside / "deeper" / "y.png", 2)
    _image(tmp_path / "secret" / "hidden.png", 3)
    root = tmp_path / "root"
    _image(root / "real" / "a.png", 0)
    (root / "real" / "linked").symlink_to(outside, target_is_directory=True)
    (root / "again").symlink_to(outside, target_is_directory=True)
    (root / "real" / "up").symlink_to(root, target_is_directory=True)
    (root / "self").symlink_to(root / "self", target_is_directory=True)
    (root / ".hidden").symlink_to(tmp_path / "secret", target_is_directory=True)
    (root / "broken").symlink_to(tmp_path / "nowhere", target_is_directory=True)
    return root


def test_images_in_symlinked_sub_folders_are_listed_once(tree: Path) -> None:
    files = list_image_files(tree)
    relative = [f.relative_to(tree).as_posix() for f in files]
    # the two links to `outside` give its images once, under the first link in walk order ("again" < "real")
    assert relative == ["again/deeper/y.png", "again/x.png", "real/a.png"]
    assert len({f.resolve() for f in files}) == len(files)


def test_walker_follows_links_once_and_keeps_hidden_rules(tree: Path) -> None:
    walked = sorted(p.relative_to(tree).as_posix() for p in iter_files(tree))
    assert walked == ["again/deeper/y.png", "again/x.png", "real/a.png"]
    with_hidden = sorted(p.relative_to(tree).as_posix() for p in iter_files(tree, include_hidden=True))
    assert with_hidden == [".hidden/hidden.png", *walked]


def test_recursive_glob_through_a_cycle_lists_each_file_once(tree: Path) -> None:
    files = list_image_files(f"{tree}/**/*.png")
    assert sorted(f.relative_to(tree).as_posix() for f in files) == ["again/deeper/y.png", "again/x.png", "real/a.png"]


def test_knn_class_folder_with_symlinked_images(tmp_path: Path) -> None:
    _image(tmp_path / "shared" / "cat" / "c0.png", 4)
    _image(tmp_path / "shared" / "cat" / "c1.png", 5)
    root = tmp_path / "train"
    _image(root / "cat" / "own.png", 6)
    _image(root / "dog" / "d0.png", 7)
    (root / "cat" / "more").symlink_to(tmp_path / "shared" / "cat", target_is_directory=True)
    folders = list_class_folders(root)
    assert folders.classes == ["cat", "dog"]
    assert sorted(f.name for f in folders.files) == ["c0.png", "c1.png", "d0.png", "own.png"]
    assert folders.labels.count(0) == 3


def test_embed_reads_images_behind_symlinks(tree: Path, tmp_path: Path) -> None:
    result = embed_source(tree, "test-radio-v2-tiny", tmp_path / "out" / "e.safetensors", progress=False)
    assert [f.name for f in result.embeddings.files] == ["y.png", "x.png", "a.png"]
    assert result.embeddings.tensors["summary"].shape[0] == 3


def test_classify_and_segment_datasets_follow_symlinked_sub_folders(tmp_path: Path) -> None:
    from vfmkit.data.palette import Palette
    from vfmkit.tasks.classify.data import load_split
    from vfmkit.tasks.classify.spec import ClassifyDataSpec
    from vfmkit.tasks.segment.data import load_segment_split
    from vfmkit.tasks.segment.spec import SegmentDataSpec

    outside = tmp_path / "outside"
    _image(outside / "cat" / "nested" / "b.png", 4)
    _image(tmp_path / "cls" / "train" / "cat" / "a.png", 5)
    (tmp_path / "cls" / "train" / "cat" / "more").symlink_to(outside / "cat", target_is_directory=True)
    split = load_split(ClassifyDataSpec(root=tmp_path / "cls"), "train", ["cat"])
    assert sorted(p.name for p in split.files) == ["a.png", "b.png"]

    seg = tmp_path / "seg"
    for kind in ("images", "masks"):
        _image(outside / kind / "deep" / "001.png", 6)
        (seg / kind / "train").mkdir(parents=True)
        (seg / kind / "train" / "linked").symlink_to(outside / kind, target_is_directory=True)
    mask = np.zeros((16, 16), dtype=np.uint8)
    Image.fromarray(mask, mode="L").save(outside / "masks" / "deep" / "001.png")
    palette = [{"name": "bg", "id": 0}, {"name": "fg", "id": 1}]
    pairs = load_segment_split(SegmentDataSpec(root=seg, palette=palette), "train")
    assert [Path(p).name for p in pairs.images] == ["001.png"] and len(pairs.masks) == 1
    assert Palette.from_spec(SegmentDataSpec(root=seg, palette=palette)).num_classes == 2

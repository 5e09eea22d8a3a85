"""FAISS index, search by image and text, and near-duplicate groups over embeddings."""

from __future__ import annotations

import colorsys
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tests.features.test_sharded_embed import make_images
from tests.tasks.clip.clip_data import COMBINATIONS, caption, draw

from vfmkit.cli.main import main
from vfmkit.data.preprocess import preprocess_images
from vfmkit.errors import DataError, VfmError
from vfmkit.features.dedup import find_duplicates, write_contact_sheet, write_csv
from vfmkit.features.embed import Embeddings, save_embeddings
from vfmkit.features.index import build_index, load_index, parse_memory, plan_index
from vfmkit.features.search import Collection, ImageQueries, TextQueries, runtime_options_from_tag
from vfmkit.features.sharded import embed_to_folder
from vfmkit.models.clip_zoo import load_clip_model


def write_vectors(path: Path, vectors: np.ndarray) -> Path:
    """A single-file embeddings set of the given (N, d) summary vectors, rows named ``v00000.png`` ..."""
    files = [Path(f"v{i:05d}.png") for i in range(len(vectors))]
    save_embeddings(Embeddings({"summary": torch.from_numpy(vectors)}, files, [], (32, 32)), path, "vectors", "summary")
    return path


def clustered(count: int, dim: int, clusters: int, seed: int = 0, noise: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return (centres[rng.integers(0, clusters, count)] + noise * rng.normal(size=(count, dim))).astype(np.float32)


def test_plan_index_and_memory_budget() -> None:
    assert parse_memory("4GB") == 4 * 2**30 and parse_memory("512mb") == 512 * 2**20 and parse_memory("1.5G") > 2**30
    with pytest.raises(VfmError, match="--memory must look like"):
        parse_memory("lots")
    assert plan_index(200_000, 768, "auto").kind == "flat"
    assert plan_index(200_001, 768, "auto").kind == "hnsw"
    big = plan_index(1_000_000, 768, "auto", parse_memory("1GB"))
    assert big.kind == "ivf-pq" and big.bytes <= parse_memory("1GB") and 768 % big.params["m"] == 0
    assert plan_index(100, 768, "auto", parse_memory("100KB")).kind == "ivf-pq"
    with pytest.raises(VfmError, match="fits --memory"):
        plan_index(10_000_000, 768, "auto", parse_memory("10MB"))
    with pytest.raises(VfmError, match="--kind must be one of"):
        plan_index(10, 8, "lsh")


def test_exact_search_returns_the_planted_neighbours(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(3000, 24)).astype(np.float32)
    planted = {int(q): int(n) for q, n in zip(rng.choice(3000, 20, replace=False), rng.choice(3000, 20), strict=True)}
    planted = {q: n for q, n in planted.items() if q != n}
    for query, neighbour in planted.items():
        vectors[neighbour] = vectors[query] * 3.0 + 0.01 * rng.normal(size=24)  # cosine ~1, another norm
    path = write_vectors(tmp_path / "v.safetensors", vectors)
    exact = Collection(path)
    assert exact.kind == "exact"
    build = build_index(path, kind="flat", progress=False)
    assert build.recall_at_10 is None and build.index_path == tmp_path / "v.faiss"
    indexed = Collection(path)
    assert indexed.kind == "flat"
    for collection in (exact, indexed):
        hits = collection.search(vectors[list(planted)], 2)
        for (query, neighbour), found in zip(planted.items(), hits, strict=True):
            assert {h.row for h in found} == {query, neighbour}
            assert found[1].score > 0.999 and found[0].path == f"v{found[0].row:05d}.png"


@pytest.mark.parametrize("kind", ["hnsw", "ivf-pq"])
def test_approximate_recall_is_reported_and_high(kind: str, tmp_path: Path) -> None:
    path = write_vectors(tmp_path / "v.safetensors", clustered(4000, 16, 40))
    build = build_index(path, tmp_path / f"{kind}.faiss", kind=kind, recall_queries=300, progress=False)
    assert build.kind == kind and build.recall_queries == 300
    assert build.recall_at_10 >= 0.9, build
    if kind == "ivf-pq":  # the codes alone, before re-scoring with the exact vectors, are reported too
        assert 0.0 < build.recall_codes_only <= build.recall_at_10
    meta = json.loads((tmp_path / f"{kind}.json").read_text())
    assert meta["recall_at_10"] == build.recall_at_10 and len(meta["paths"]) == 4000
    assert meta["facts"]["model"] == "vectors" and meta["vectors"] == "summary"
    loaded = load_index(tmp_path / f"{kind}.faiss")
    assert loaded.index.ntotal == 4000


def test_missing_faiss_names_the_extra(tmp_path: Path, monkeypatch, capsys) -> None:
    path = write_vectors(tmp_path / "v.safetensors", clustered(50, 8, 5))
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(SystemExit) as exit_info:
        main(["index", "build", str(path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "pip install 'vfmkit[search]'" in error and len(error.splitlines()) == 1


@pytest.fixture(scope="module")
def radio_folder(tmp_path_factory) -> tuple[Path, Path]:
    images = make_images(tmp_path_factory.mktemp("search") / "images", 12, seed=5)
    out = embed_to_folder(images, "test-radio-v2-tiny", images.parent / "emb", 32, shard_size=5, progress=False).out
    return images, out


def test_image_query_finds_itself_and_other_weights_are_refused(radio_folder, tmp_path: Path, capsys) -> None:
    images, out = radio_folder
    collection = Collection(out)
    hits = collection.search(ImageQueries(collection)([images / "img007.png"]), 3)[0]
    assert hits[0].path == str(images / "img007.png") and hits[0].score > 0.9999 and len(hits) == 3
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(out), "--image", str(images / "img003.png"), "-k", "2", "--json"])
    assert exit_info.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kind"] == "exact" and printed["results"][0]["path"] == str(images / "img003.png")
    changed = json.loads((out / "manifest.json").read_text())
    changed["weights_fingerprint"] = "0" * 64
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for item in out.iterdir():
        (tampered / item.name).symlink_to(item)
    (tampered / "manifest.json").unlink()
    (tampered / "manifest.json").write_text(json.dumps(changed))
    with pytest.raises(DataError, match="not those the embeddings were made with"):
        ImageQueries(Collection(tampered))
    with pytest.raises(VfmError, match="has no text tower"):
        TextQueries(collection)
    assert runtime_options_from_tag("onnxruntime-int8-opset17").int8
    assert runtime_options_from_tag("torch-bf16").dtype == "bf16"
    with pytest.raises(VfmError, match="cannot reproduce"):
        runtime_options_from_tag("tensorrt-fp16")


def test_cli_index_build_and_search_table(radio_folder, capsys) -> None:
    images, out = radio_folder
    with pytest.raises(SystemExit) as exit_info:
        main(["index", "build", str(out), "--kind", "hnsw", "--recall-queries", "12"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "index hnsw" in printed and "over 12 x 192 vectors (summary)" in printed
    assert "recall@10 vs exact search: 1.0000 on 12 queries" in printed
    with pytest.raises(SystemExit):
        main(["search", str(out), "--image", str(images / "img001.png"), "-k", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "score", "path"] and lines[1].split()[2] == str(images / "img001.png")
    (out / "index.faiss").unlink()
    (out / "index.json").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(out), "--text", "x", "--image", str(images / "img001.png")])
    assert exit_info.value.code == 2 and "exactly one of --image" in capsys.readouterr().err


def _distinct_image(index: int, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """Shapes on a background whose hue and shade differ from image to image."""
    red, green, blue = colorsys.hsv_to_rgb(
        (index * 5 % 24) / 24, 0.9 if index % 2 else 0.5, 0.9 if index // 2 % 2 else 0.55
    )
    image = Image.new("RGB", (size, size), (int(red * 255), int(green * 255), int(blue * 255)))
    pen = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = (int(v) for v in rng.integers(0, size - 20, 2))
        width, height = (int(v) for v in rng.integers(15, 60, 2))
        shape = pen.ellipse if rng.random() < 0.5 else pen.rectangle
        shape([x, y, x + width, y + height], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def test_dedup_finds_planted_near_duplicates_exactly(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    expected = set()
    for index in range(24):
        image = _distinct_image(index, rng)
        image.save(root / f"d{index:02d}.png")
        if index < 12:  # a resized, a recompressed and a flipped copy, in turn
            copy = [root / f"d{index:02d}_small.png", root / f"d{index:02d}_q50.jpg", root / f"d{index:02d}_flip.png"][
                index % 3
            ]
            if index % 3 == 0:
                image.resize((70, 70)).save(copy)
            elif index % 3 == 1:
                image.save(copy, quality=50)
            else:
                image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(copy)
            expected.add(frozenset({str(root / f"d{index:02d}.png"), str(copy)}))
    out = embed_to_folder(root, "test-radio-v2-tiny", tmp_path / "emb", 128, progress=False).out
    result = find_duplicates(out, threshold=0.99, progress=False)
    assert {frozenset(group.paths) for group in result.groups} == expected  # precision and recall 1.0
    assert all(group.scores[0] == pytest.approx(1.0) and min(group.scores) >= 0.99 for group in result.groups)
    build_index(out, kind="hnsw", progress=False)
    assert {frozenset(g.paths) for g in find_duplicates(out, 0.99, progress=False).groups} == expected
    with pytest.raises(SystemExit) as exit_info:
        main(["dedup", str(out), "-t", "0.99", "--out", str(tmp_path / "dups.csv")])
    assert exit_info.value.code == 0
    assert "12 group(s) of near-duplicates (24 images) among 36" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "dups.csv").open()))
    assert len(rows) == 24 and {r["group"] for r in rows} == {str(n) for n in range(1, 13)}
    sheet = Image.open(tmp_path / "dups.png")
    assert sheet.size[1] == 12 * 100
    with pytest.raises(VfmError, match="threshold is a cosine"):
        find_duplicates(out, threshold=1.5)


def test_no_false_group_among_distinct_images(radio_folder, tmp_path: Path) -> None:
    _, out = radio_folder
    result = find_duplicates(out, threshold=0.99, progress=False)
    assert result.groups == [] and result.num_pairs == 0
    assert write_contact_sheet(result, tmp_path / "none.png") is None
    write_csv(result, tmp_path / "none.csv")
    assert (tmp_path / "none.csv").read_text() == "group,path,score\n"


def _train_text_tower(clip, images: torch.Tensor, captions: list[str], steps: int = 200) -> None:
    """A few CLIP-loss steps on the text tower only (the image tower stays as embedded). The random image tower maps
    the 12 pictures within cosine 0.998 of each other, hence the large logit scale."""
    torch.manual_seed(0)
    clip.freeze(vision=True)
    with torch.no_grad():
        image_embeddings = clip.encode_image(images)
    tokens = clip.tokenize(captions)
    optimizer = torch.optim.AdamW([p for _, p in clip.text_parameters()], lr=2e-3)
    targets = torch.arange(len(captions))
    for _ in range(steps):
        logits = 100.0 * clip.encode_text(tokens) @ image_embeddings.T
        loss = torch.nn.functional.cross_entropy(logits, targets) + torch.nn.functional.cross_entropy(logits.T, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    clip.eval()


def test_text_search_with_a_trained_tiny_clip_ranks_the_matching_image_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    captions = [caption(colour, shape) for colour, shape in COMBINATIONS]
    for (colour, shape), text in zip(COMBINATIONS, captions, strict=True):
        draw(colour, shape, rng).save(root / f"{text.replace(' ', '_')}.png")
    out = embed_to_folder(root, "test-nvclip-tiny", tmp_path / "emb", progress=False).out
    collection = Collection(out)
    clip = load_clip_model("test-nvclip-clip-tiny")
    files = [root / f"{t.replace(' ', '_')}.png" for t in captions]

    def first_hits(queries) -> list[str]:
        return [collection.search(queries([text]), 3)[0][0].path for text in captions]

    before = first_hits(TextQueries(collection, clip))
    assert before != [str(f) for f in files]  # untrained, text and images do not meet yet
    _train_text_tower(clip, preprocess_images(files, clip.visual.backbone), captions)
    assert first_hits(TextQueries(collection, clip)) == [str(f) for f in files]


def test_text_towers_from_the_registry_and_mismatches(radio_folder, tmp_path: Path, capsys) -> None:
    images, radio_summary = radio_folder
    siglip = embed_to_folder(images, "test-radio-v2-tiny", tmp_path / "sig", 32, adaptors=["siglip"], progress=False)
    collection = Collection(siglip.out)
    assert collection.vectors == "adaptor.siglip.summary"
    vectors = TextQueries(collection)(["a red circle", "a green square"])  # test-radio-clip-tiny's text tower
    assert vectors.shape == (2, collection.dim) == (2, 40)
    nvclip = embed_to_folder(images, "test-nvclip-tiny", tmp_path / "nv", progress=False).out
    command = ["search", str(nvclip), "--text", "a red circle", "-k", "3", "--json"]
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--text-model", "test-nvclip-clip-tiny"])
    assert exit_info.value.code == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 3
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(radio_summary), "--text", "a red circle", "--text-model", "test-nvclip-clip-tiny"])
    assert exit_info.value.code == 2
    assert "has other weights than test-radio-v2-tiny" in capsys.readouterr().err
    with pytest.raises(VfmError, match="pairs text with adaptor siglip, but the index holds summary"):
        TextQueries(Collection(radio_summary), load_clip_model("test-radio-clip-tiny"))

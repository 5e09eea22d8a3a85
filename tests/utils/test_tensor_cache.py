"""The one tensor-cache helper: an entry is used only when it decodes to exactly the expected names, dtypes and
shapes, its content hash matches and its key facts are the caller's; everything else is a counted miss. Writes are
atomic and a disk error names the entry's path."""

from __future__ import annotations

import errno
import json

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vfmkit.utils.tensor_cache import CacheStats, content_hash, read_entry, write_entry

FACTS = {"key": "abc123", "split": "train"}


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "summary": torch.randn(4, 8, generator=generator),
        "features": torch.randn(4, 3, generator=generator).to(torch.bfloat16),
        "grid": torch.tensor([2, 2], dtype=torch.int64),
    }


def _layout(tensors: dict[str, torch.Tensor]) -> dict:
    return {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata())


def test_round_trip_is_a_hit_with_the_same_tensors(tmp_path) -> None:
    tensors, path = _tensors(), tmp_path / "sub" / "entry.safetensors"
    assert write_entry(path, tensors, FACTS) == path
    lookup = read_entry(path, _layout(tensors), FACTS)
    assert lookup.hit and not lookup.damaged
    assert lookup.tensors.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert torch.equal(lookup.tensors[name], tensor) and lookup.tensors[name].dtype == tensor.dtype
    metadata = _metadata(path)
    assert metadata["sha256"] == content_hash(tensors) and json.loads(metadata["facts"]) == FACTS
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_no_file_is_a_plain_miss(tmp_path) -> None:
    lookup = read_entry(tmp_path / "absent.safetensors", _layout(_tensors()), FACTS)
    assert not lookup.hit and not lookup.damaged


def _damage_truncated(path, tensors) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _damage_other_keys(path, tensors) -> None:
    save_file({"other": tensors["summary"]}, str(path), metadata=_metadata(path))


def _damage_other_shape(path, tensors) -> None:
    save_file({**tensors, "summary": torch.zeros(4, 9)}, str(path), metadata=_metadata(path))


def _damage_other_dtype(path, tensors) -> None:
    save_file({**tensors, "summary": tensors["summary"].double()}, str(path), metadata=_metadata(path))


def _damage_zeros_same_layout(path, tensors) -> None:
    """Well-formed, same names, dtypes, shapes and metadata: only the values differ (N16)."""
    save_file({k: torch.zeros_like(v) for k, v in tensors.items()}, str(path), metadata=_metadata(path))


def _damage_no_metadata(path, tensors) -> None:
    save_file(tensors, str(path))  # an entry of the format before this helper


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_damage_truncated, "unreadable"),
        (_damage_other_keys, "other tensors than expected"),
        (_damage_other_shape, "other tensors than expected"),
        (_damage_other_dtype, "other tensors than expected"),
        (_damage_zeros_same_layout, "sha256 mismatch"),
        (_damage_no_metadata, "not a vfmkit-tensor-cache-1 entry"),
    ],
)
def test_damaged_entries_are_counted_misses_and_rebuilt(damage, reason, tmp_path) -> None:
    tensors, path = _tensors(), tmp_path / "entry.safetensors"
    write_entry(path, tensors, FACTS)
    damage(path, tensors)
    stats = CacheStats()
    lookup = read_entry(path, _layout(tensors), FACTS)
    stats.record(lookup, path)
    assert not lookup.hit and lookup.damaged and reason in lookup.problem
    assert (stats.hits, stats.misses, stats.damaged) == (0, 1, 1)
    write_entry(path, tensors, FACTS)  # what the caller does on a miss
    again = read_entry(path, _layout(tensors), FACTS)
    stats.record(again, path)
    assert again.hit and torch.equal(again.tensors["summary"], tensors["summary"])
    assert (
        stats.describe("feature cache")
        == f"feature cache: 1 hit, 1 damaged entry rebuilt (e.g. {path.name}: {lookup.problem})"
    )


def test_an_entry_of_other_key_facts_is_a_miss(tmp_path) -> None:
    tensors, path = _tensors(), tmp_path / "entry.safetensors"
    write_entry(path, tensors, FACTS)
    lookup = read_entry(path, _layout(tensors), {**FACTS, "key": "def456"})
    assert lookup.damaged and "other key facts" in lookup.problem


def test_an_unexpected_layout_is_a_miss_even_when_the_file_is_consistent(tmp_path) -> None:
    """A file written correctly for other shapes (e.g. another teacher resolution) is not used (N8)."""
    tensors, path = _tensors(), tmp_path / "entry.safetensors"
    write_entry(path, {**tensors, "features": torch.zeros(9, 3, dtype=torch.bfloat16)}, FACTS)
    lookup = read_entry(path, _layout(tensors), FACTS)
    assert lookup.damaged and "other tensors than expected" in lookup.problem


def test_counts_and_the_one_line(tmp_path) -> None:
    stats = CacheStats()
    tensors = _tensors()
    for index in range(3):
        write_entry(tmp_path / f"{index}.safetensors", tensors, FACTS)
    for index in range(4):
        stats.record(read_entry(tmp_path / f"{index}.safetensors", _layout(tensors), FACTS))
    assert (stats.hits, stats.misses, stats.damaged) == (3, 1, 0)
    assert stats.describe("teacher cache") == "teacher cache: 3 hits, 1 computed"
    stats.add(hits=2, misses=2, damaged=2, example="x.safetensors: sha256 mismatch")
    assert stats.describe("teacher cache") == (
        "teacher cache: 5 hits, 1 computed, 2 damaged entries rebuilt (e.g. x.safetensors: sha256 mismatch)"
    )


def test_a_full_disk_names_the_entry_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    """safetensors reports a full disk as SafetensorError('... (os error 28)'); it becomes an OSError naming the
    entry (the CLI's ``cannot write <path>: No space left on device``)."""

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    path = tmp_path / "cache" / "entry.safetensors"
    with pytest.raises(OSError) as info:
        write_entry(path, _tensors(), FACTS)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert isinstance(info.value.__cause__, SafetensorError)
    assert list(path.parent.iterdir()) == []


def test_the_hash_covers_names_dtypes_shapes_and_bytes() -> None:
    base = {"a": torch.arange(6, dtype=torch.float32)}
    variants = [
        {"b": base["a"]},
        {"a": base["a"].view(2, 3)},
        {"a": base["a"].to(torch.float64)},
        {"a": base["a"] + 1},
    ]
    assert len({content_hash(base), *(content_hash(v) for v in variants)}) == 5
    assert content_hash(base) == content_hash({"a": torch.arange(6, dtype=torch.float32)})

"""``vfm embed --out FOLDER``: streaming, resumable, multi-process embedding into shards (layout: :mod:`.shards`).

Memory stays flat: rows are gathered for one shard (two while a batch straddles a boundary), written, and dropped.
Resuming is running the same command again: shards whose files vouch for them (:func:`.shards.complete_shard`) are
kept and only the others are computed. A folder started with another model, weights, resolution, ``what``, adaptors,
runtime, storage dtype, shard size or image listing is refused, naming the difference (``overwrite`` starts over).

With several processes (torchrun, or ``devices`` > 1 here), shard ``i`` belongs to rank ``i % world_size``; every
rank lists the source itself (the listing is deterministic, and rank 0's fingerprint of it is checked by all),
writes its own shards, and rank 0 writes the manifest once every rank has passed the final barrier. Shards do not
depend on the number of processes, so a rerun with any number of them completes what a dead rank left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vfmkit.data.preprocess import get_preprocessing, target_size
from vfmkit.errors import DataError, VfmError
from vfmkit.features import distributed
from vfmkit.features.embed import (
    WHAT_CHOICES,
    SkippedImage,
    default_num_workers,
    iter_decoded_batches,
    output_tensors,
    resolve_model,
    runtime_tag,
)
from vfmkit.features.progress import Progress, ProgressCallback
from vfmkit.features.reader import map_safetensors, open_embeddings
from vfmkit.features.runners import RuntimeOptions, make_runner
from vfmkit.features.shards import (
    STORE_DTYPES,
    RunFacts,
    ShardRecord,
    complete_shard,
    fact_differences,
    read_manifest,
    read_shard_record,
    remove_shards,
    shard_files,
    skipped_items,
    write_manifest,
    write_shard,
)
from vfmkit.features.sources import EmbedItem, item_name, list_embed_items, listing_fingerprint
from vfmkit.utils.atomic import stale_temp_files
from vfmkit.weights.fingerprint import weights_fingerprint

DEFAULT_SHARD_SIZE = 10_000


@dataclass
class ShardedEmbedResult:
    """What :func:`embed_to_folder` did.

    Attributes:
        out: the folder.
        manifest: its ``manifest.json``.
        num_rows: embedded images in the folder; num_skipped: items left out (unreadable), listed in the parquet files.
        shards_written: shards this run (all ranks) computed; shards_reused: complete shards found and kept.
        resolution: (H, W) the images were resized to.
        tensors: tensor name -> per-row shape.
        skipped: the left-out items of the whole folder, ``(path, reason)``.
    """

    out: Path
    manifest: Path
    num_rows: int
    num_skipped: int
    shards_written: int
    shards_reused: int
    resolution: tuple[int, int]
    tensors: dict[str, list[int]] = field(default_factory=dict)
    skipped: list[SkippedImage] = field(default_factory=list)


def embed_to_folder(
    source: str | Path | Sequence[str | Path],
    model: str | Path,
    out: str | Path,
    resolution: int | None = None,
    batch_size: int = 32,
    what: str = "summary",
    adaptors: Sequence[str] = (),
    shard_size: int = DEFAULT_SHARD_SIZE,
    store_dtype: str = "fp32",
    overwrite: bool = False,
    devices: int = 1,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
    runtime: RuntimeOptions | None = None,
    num_workers: int | None = None,
) -> ShardedEmbedResult:
    """Embed every image of a source into a shard folder (see the module docstring).

    Args:
        source: a folder, glob, list file, image file or WebDataset ``.tar`` shard(s) (see
            :func:`vfmkit.features.sources.list_embed_items`), or a sequence of paths.
        model: a registry id, ``hf-hub:`` source or checkpoint path (each process loads it).
        out: the folder (created).
        resolution: None for the model's preferred resolution, N for N x N.
        batch_size: images per forward.
        what: ``summary``, ``spatial`` or ``both``.
        adaptors: adaptor heads to load and store.
        shard_size: items per shard (>= 1).
        store_dtype: ``fp32``, ``fp16`` or ``bf16``.
        overwrite: delete the folder's shards and manifest first.
        devices: > 1: launch that many processes on this machine (CPU: gloo; GPUs: one per process, NCCL); under
            torchrun leave it at 1 (the environment says the rank).
        progress: show progress on stderr (rank 0).
        on_progress: ``on_progress(done, total)`` after each batch (this rank's items).
        runtime: how to run the model (:class:`RuntimeOptions`); None: eager PyTorch.
        num_workers: decoding processes per rank (None: :func:`~vfmkit.features.embed.default_num_workers`).

    Raises:
        VfmError: bad arguments, a folder of other settings (naming the differences), unreadable sources.
    """
    _check_arguments(what, shard_size, store_dtype, batch_size, devices, Path(out))
    if devices > 1:
        if distributed.env_ranks() is not None:
            raise VfmError("--devices is for one machine; under torchrun the launcher sets the number of processes")
        arguments = dict(locals())
        arguments.update(devices=1, on_progress=None)
        return distributed.local_launch(devices, embed_to_folder, arguments)
    use_cuda = _uses_cuda(runtime)
    ranks = distributed.join(use_cuda)
    try:
        return _embed_rank(
            ranks, source, model, Path(out), resolution, batch_size, what, adaptors, shard_size, store_dtype,
            overwrite, progress, on_progress, runtime, num_workers,
        )  # fmt: skip
    finally:
        distributed.leave(ranks)


def _check_arguments(what: str, shard_size: int, store_dtype: str, batch_size: int, devices: int, out: Path) -> None:
    if what not in WHAT_CHOICES:
        raise VfmError(f"what must be one of {', '.join(WHAT_CHOICES)}, got {what!r}")
    if shard_size < 1:
        raise VfmError(f"--shard-size must be at least 1, got {shard_size}")
    if store_dtype not in STORE_DTYPES:
        raise VfmError(f"--store-dtype must be one of {', '.join(STORE_DTYPES)}, got {store_dtype!r}")
    if batch_size < 1:
        raise VfmError(f"batch size must be at least 1, got {batch_size}")
    if devices < 1:
        raise VfmError(f"--devices must be at least 1, got {devices}")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder for sharded output (or a .safetensors file name)")


def _uses_cuda(runtime: RuntimeOptions | None) -> bool:
    if runtime is None or runtime.runtime != "torch":
        return False
    return runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available())


def _embed_rank(
    ranks, source, model, out, resolution, batch_size, what, adaptors, shard_size, store_dtype, overwrite, progress,
    on_progress, runtime, num_workers,
) -> ShardedEmbedResult:  # fmt: skip
    items = list_embed_items(source)
    backbone, model_id = resolve_model(model, adaptors)
    runner = make_runner(backbone, model_id, runtime)
    preprocessing = get_preprocessing(runner)
    size = target_size(preprocessing.preferred_resolution[::-1], preprocessing, resolution, "preferred")
    facts = RunFacts(
        model_id, weights_fingerprint(backbone), tuple(size), what, tuple(adaptors), runtime_tag(runner), store_dtype,
        shard_size, listing_fingerprint(items), len(items),
    )  # fmt: skip
    problem, reused = None, 0
    if ranks.is_main:
        try:
            reused = prepare_folder(out, facts, overwrite)
        except VfmError as exc:
            problem = exc
    problem, main_listing, reused = ranks.broadcast((problem, facts.listing, reused))
    if problem:
        raise problem
    if main_listing != facts.listing:
        raise DataError(f"rank {ranks.rank} lists other images than rank 0 in {source} (did the source change?)")
    num_shards = -(-len(items) // shard_size)
    todo = [i for i in range(ranks.rank, num_shards, ranks.world_size) if complete_shard(out, i, facts) is None]
    if todo:
        processes = ranks.world_size
        workers = num_workers if num_workers is not None else default_num_workers(len(items), batch_size, processes)
        desc = "embed" if processes == 1 else f"embed (rank 0 of {processes})"
        bar = Progress(_count(todo, facts), desc, enabled=progress and ranks.is_main, callback=on_progress)
        _embed_shards(runner, items, todo, facts, out, size, batch_size, workers, bar)
        bar.close()
    ranks.barrier()
    if ranks.is_main:
        try:
            finish_folder(out, facts, num_shards)
        except VfmError as exc:
            problem = exc
    problem = ranks.broadcast(problem)
    if problem:
        raise problem
    return folder_result(out, shards_written=num_shards - reused, reused=reused)


def _count(todo: list[int], facts: RunFacts) -> int:
    return sum(min(facts.shard_size, facts.num_items - index * facts.shard_size) for index in todo)


def prepare_folder(out: Path, facts: RunFacts, overwrite: bool) -> int:
    """Make ``out`` ready for a run with ``facts`` (rank 0, before any rank writes).

    Removes temporary files a killed writer left; with ``overwrite`` removes the shards and manifest; otherwise
    refuses a folder whose manifest or shards were made with other facts. Writes the start manifest and returns
    the number of shards already complete.

    Raises:
        DataError: other settings in the folder (each difference named), or a folder that cannot be written.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create --out folder {out}: {exc.strerror or exc}") from exc
    for stale in stale_temp_files(out):
        stale.unlink(missing_ok=True)
    if overwrite:
        remove_shards(out)
    manifest = read_manifest(out)
    found = [RunFacts.from_json(manifest)] if manifest is not None else _shard_facts(out)
    for have in found:
        differences = fact_differences(have, facts)
        if differences:
            raise DataError(
                f"{out} holds embeddings made with other settings ({'; '.join(differences)}); use --overwrite to "
                "start over, or another --out folder"
            )
    write_manifest(out, facts)
    num_shards = -(-facts.num_items // facts.shard_size)
    return sum(complete_shard(out, index, facts) is not None for index in range(num_shards))


def _shard_facts(out: Path) -> list[RunFacts]:
    """The facts of the shards in a folder without a manifest (first readable parquet file of each fact set)."""
    found = []
    for path in shard_files(out):
        if path.suffix == ".parquet":
            record = read_shard_record(out, int(path.stem.split("-")[1]))
            if record is not None and record[1] not in found:
                found.append(record[1])
    return found


def finish_folder(out: Path, facts: RunFacts, num_shards: int) -> Path:
    """Check that every shard is complete and write the final manifest (rank 0, after the last barrier).

    Raises:
        DataError: shards still missing (a rank failed): rerun to complete them.
    """
    records: list[ShardRecord] = []
    missing = []
    for index in range(num_shards):
        record = complete_shard(out, index, facts)
        if record is None:
            missing.append(index)
        else:
            records.append(record)
    if missing:
        raise DataError(f"{out}: {len(missing)} shard(s) are missing or incomplete; rerun the same command to finish")
    tensors = {}
    for record in records:
        if record.num_rows:
            parts = map_safetensors(out / f"{record.stem}.safetensors")
            tensors = {key: list(part.array.shape[1:]) for key, part in parts.items()}
            break
    skipped = [item for record in records for item in skipped_items(out, record)]
    return write_manifest(out, facts, records, tensors, skipped)


def folder_result(out: Path, shards_written: int, reused: int = 0) -> ShardedEmbedResult:
    """Summarise a complete folder from its manifest and parquet files."""
    view = open_embeddings(out)
    manifest = view.facts
    skipped = [SkippedImage(Path(path), reason) for path, reason in view.skipped]
    return ShardedEmbedResult(
        out, out / "manifest.json", manifest["num_rows"], manifest["num_skipped"], shards_written, reused,
        tuple(manifest["resolution"]), manifest["tensors"], skipped,
    )  # fmt: skip


class _ShardBuffer:
    """Rows and item records of one shard being computed; the rows go into tensors allocated once per shard (at
    most ``count`` rows: the shard's peak memory, whatever the collection's size)."""

    def __init__(self, index: int, first: int, count: int) -> None:
        self.index, self.first, self.count = index, first, count
        self.records: list[dict | None] = [None] * count
        self.rows: dict[str, torch.Tensor] = {}
        self.num_rows = self.seen = 0

    def add_rows(self, entries: list[tuple[int, str, tuple[int, int]]], tensors: dict[str, torch.Tensor]) -> None:
        """Append rows: ``entries`` (position in the shard, path, original (W, H)) and their outputs
        ``tensors[key]`` (len(entries), ...), copied in one slice per key."""
        start, stop = self.num_rows, self.num_rows + len(entries)
        for key, value in tensors.items():
            if key not in self.rows:
                self.rows[key] = torch.empty((self.count, *value.shape[1:]), dtype=torch.float32)
            self.rows[key][start:stop] = value
        for row, (local, name, (width, height)) in enumerate(entries, start=start):
            self.records[local] = {
                "path": name, "row": row, "width": width, "height": height, "skipped": False, "reason": None,
            }  # fmt: skip
        self.num_rows = stop
        self.seen += len(entries)

    def add_failure(self, local: int, name: str, error: str) -> None:
        self.records[local] = {
            "path": name,
            "row": None,
            "width": None,
            "height": None,
            "skipped": True,
            "reason": error,
        }
        self.seen += 1

    def write(self, out: Path, facts: RunFacts) -> ShardRecord:
        tensors = {key: rows[: self.num_rows] for key, rows in self.rows.items()}
        return write_shard(out, self.index, self.first, tensors, self.records, facts)


def _embed_shards(runner, items: list[EmbedItem], todo: list[int], facts: RunFacts, out: Path, size, batch_size: int,
                  num_workers: int, bar: Progress) -> None:  # fmt: skip
    """Compute shards ``todo`` in order with one DataLoader over their items; write each as soon as it is whole."""
    work: list[EmbedItem] = []
    owner: list[tuple[int, int]] = []  # position in work -> (shard index, position in shard)
    buffers: dict[int, _ShardBuffer] = {}
    for index in todo:
        first = index * facts.shard_size
        count = min(facts.shard_size, facts.num_items - first)
        buffers[index] = _ShardBuffer(index, first, count)
        work.extend(items[first : first + count])
        owner.extend((index, local) for local in range(count))
    preprocessing = get_preprocessing(runner)
    with torch.inference_mode():
        for batch in iter_decoded_batches(work, preprocessing, size, batch_size, num_workers):
            if batch.images is not None:
                outputs = {
                    key: value.float().cpu() for key, value in output_tensors(runner(batch.images), facts.what).items()
                }
                _route_rows(batch, outputs, owner, work, buffers)
            for position, error in batch.failed:
                index, local = owner[position]
                buffers[index].add_failure(local, item_name(work[position]), error)
            for index in [i for i, buffer in buffers.items() if buffer.seen == buffer.count]:
                buffers.pop(index).write(out, facts)
            bar.update(len(batch.indices) + len(batch.failed))
    if buffers:
        raise VfmError(f"internal error: shards {sorted(buffers)} were not completed")


def _route_rows(batch, outputs: dict[str, torch.Tensor], owner, work, buffers: dict[int, _ShardBuffer]) -> None:
    """Hand a batch's rows to their shards: the rows of one shard are consecutive in the batch (shards cover
    consecutive items and batches keep the item order), so each shard takes one slice per tensor."""
    start = 0
    while start < len(batch.indices):
        index = owner[batch.indices[start]][0]
        stop = start
        while stop < len(batch.indices) and owner[batch.indices[stop]][0] == index:
            stop += 1
        entries = [
            (owner[position][1], item_name(work[position]), size)
            for position, size in zip(batch.indices[start:stop], batch.sizes[start:stop], strict=True)
        ]
        buffers[index].add_rows(entries, {key: value[start:stop] for key, value in outputs.items()})
        start = stop

"""``vfm index build``: a FAISS index over embeddings, cosine similarity through L2-normalised vectors.

Kinds: ``flat`` (exact inner product), ``hnsw`` (HNSW graph, M = 32, over the full vectors), ``ivf-pq`` (inverted
lists + product quantization: nlist = sqrt(rows) lists; ``m`` bytes per vector, the largest divisor of the width that
fits, up to 96 and to width / 16 (FAISS trains sub-vectors narrower than 16 dimensions very slowly); trained on a
sample of max(64 x nlist, 10,000) rows, as autofaiss trains on a sample; at query time its 32 x k candidates are
re-scored with the exact vectors, read from the memory-mapped embeddings). ``auto`` takes ``flat`` up to 200,000
rows (when the vectors fit ``memory``), then ``hnsw`` when the vectors and its graph fit, else ``ivf-pq`` with the
largest code that fits.

Files: ``<name>.faiss`` (the index) and ``<name>.json`` beside it: kind and search parameters, the vectors' tensor
name and width, the embeddings' model facts (model, weights fingerprint, resolution, what, adaptors, runtime), the
``paths`` of the rows (row -> image), the recall@10 of the index against exact search on a sample of rows used as
queries, and the build time. Default location: ``<embeddings folder>/index.faiss`` (``<stem>.faiss`` beside a
single ``.safetensors`` file).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vfmkit.errors import DataError, VfmError
from vfmkit.features.progress import Progress
from vfmkit.features.reader import EmbeddingsView, RowArray, open_embeddings
from vfmkit.utils.atomic import atomic_output, atomic_write_text

INDEX_KINDS = ("auto", "flat", "ivf-pq", "hnsw")
EXACT_LIMIT = 200_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
RERANK_FACTOR = 32
"""IVF-PQ: candidates per result re-scored with the exact vectors (when the embeddings are readable)."""
DEFAULT_MEMORY = "4GB"
FACT_KEYS = ("model", "weights_fingerprint", "resolution", "what", "adaptors", "runtime")
TEXT_ADAPTORS = ("siglip2-g", "clip", "siglip")
"""RADIO adaptor heads aligned with a text tower; their summary is the default vector to index when present."""
INSTALL_HINT = "pip install 'vfmkit[search]'"


def require_faiss():
    """The ``faiss`` module; a :class:`VfmError` naming the extra to install when it is missing."""
    try:
        import faiss
    except ImportError:
        raise VfmError(f"vector indexes need FAISS, which is not installed: {INSTALL_HINT}") from None
    return faiss


def parse_memory(text: str) -> int:
    """``4GB``, ``512MB``, ``1.5G``, ``2TiB`` -> bytes (powers of 1024).

    Raises:
        VfmError: anything else.
    """
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", str(text), flags=re.IGNORECASE)
    if not found:
        raise VfmError(f"--memory must look like 4GB, 512MB or 1.5G, got {text!r}")
    value, unit = float(found.group(1)), found.group(2).upper()
    return int(value * 1024 ** "_KMGT".index(unit or "_"))


@dataclass(frozen=True)
class IndexPlan:
    """The index to build: ``kind`` and its parameters, and the bytes it is expected to take."""

    kind: str
    params: dict
    bytes: int


def plan_index(num_rows: int, dim: int, kind: str = "auto", memory: int | None = None) -> IndexPlan:
    """Choose the index kind and parameters for ``num_rows`` vectors of width ``dim`` within ``memory`` bytes.

    Raises:
        VfmError: an unknown kind, or nothing that fits ``memory``.
    """
    if kind not in INDEX_KINDS:
        raise VfmError(f"--kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    memory = memory if memory is not None else parse_memory(DEFAULT_MEMORY)
    flat = IndexPlan("flat", {}, num_rows * dim * 4)
    hnsw = IndexPlan(
        "hnsw", {"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH},
        num_rows * (dim * 4 + HNSW_M * 2 * 4),
    )  # fmt: skip
    if kind == "flat":
        return flat
    if kind == "hnsw":
        return hnsw
    if kind == "auto" and num_rows <= EXACT_LIMIT and flat.bytes <= memory:
        return flat
    if kind == "auto" and hnsw.bytes <= memory:
        return hnsw
    return _plan_ivf_pq(num_rows, dim, memory, strict=kind == "auto")


def _plan_ivf_pq(num_rows: int, dim: int, memory: int, strict: bool) -> IndexPlan:
    nlist = int(min(max(16, math.sqrt(num_rows)), max(1, num_rows // 39)))
    fixed = nlist * dim * 4
    widest = max(1, dim // 16 if dim >= 64 else dim // 2)  # FAISS trains sub-vectors of < 16 dims very slowly
    candidates = [m for m in range(min(widest, 96), 0, -1) if dim % m == 0]
    for m in candidates:
        size = fixed + num_rows * (m + 8)
        if size <= memory or (m == candidates[-1] and not strict):
            nprobe = min(nlist, max(8, nlist // 8))
            nbits = max(1, min(8, int(math.log2(max(num_rows, 2)))))  # PQ trains 2^nbits centroids per sub-vector
            return IndexPlan("ivf-pq", {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": nprobe}, size)
    raise VfmError(f"no index of {num_rows} x {dim} vectors fits --memory {memory / 2**30:.2f} GiB; raise --memory")


def default_vectors_key(view: EmbeddingsView) -> str:
    """``adaptor.<name>.summary`` of a text-aligned RADIO adaptor when the embeddings hold one, else ``summary``.

    Raises:
        DataError: no summary vectors at all (embedded with ``--what spatial``).
    """
    for name in TEXT_ADAPTORS:
        if f"adaptor.{name}.summary" in view.keys:
            return f"adaptor.{name}.summary"
    if "summary" in view.keys:
        return "summary"
    raise DataError(f"{view.location} holds no summary vectors (embedded with --what spatial): embed with --what both")


def normalized(block: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit L2 norm (zero rows stay zero)."""
    block = np.ascontiguousarray(block, dtype=np.float32)
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return block / np.maximum(norms, 1e-12)


def exact_search(vectors: RowArray, queries: np.ndarray, k: int, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` cosine search of normalised ``queries`` (q, d) over all rows, ``chunk`` rows at a time.

    Returns:
        float32 (q, k) scores (descending) and int64 (q, k) row ids (-1 where there are fewer than k rows).
    """
    faiss = require_faiss()
    queries = normalized(queries)
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for start, block in vectors.chunks(chunk):
        index = faiss.IndexFlatIP(block.shape[1])
        index.add(normalized(block))
        scores, ids = index.search(queries, min(k, len(block)))
        ids = np.where(ids >= 0, ids + start, -1)
        merged_scores = np.concatenate([best_scores, scores], axis=1)
        merged_ids = np.concatenate([best_ids, ids], axis=1)
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, axis=1)
        best_ids = np.take_along_axis(merged_ids, order, axis=1)
    return best_scores, best_ids


def recall_at_k(approximate: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each query's exact top-``k`` rows found in its approximate top-``k``."""
    hits = [
        len(set(a[:k].tolist()) & set(e[:k].tolist()) - {-1}) / max(1, int((e[:k] >= 0).sum()))
        for a, e in zip(approximate, exact, strict=True)
    ]
    return float(np.mean(hits)) if hits else 1.0


@dataclass
class IndexBuild:
    """What :func:`build_index` wrote and measured."""

    index_path: Path
    meta_path: Path
    kind: str
    params: dict
    num_rows: int
    dim: int
    vectors: str
    recall_at_10: float | None
    recall_queries: int
    seconds: float
    bytes: int
    recall_codes_only: float | None = None
    """IVF-PQ: recall@10 of the compressed codes alone, before re-scoring with the exact vectors."""


def _make_index(faiss, plan: IndexPlan, dim: int):
    if plan.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if plan.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, plan.params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = plan.params["ef_construction"]
        return index
    quantizer = faiss.IndexFlatIP(dim)
    p = plan.params
    return faiss.IndexIVFPQ(quantizer, dim, p["nlist"], p["m"], p["nbits"], faiss.METRIC_INNER_PRODUCT)


def _train(index, vectors: RowArray, plan: IndexPlan, seed: int) -> None:
    if plan.kind != "ivf-pq":
        return
    sample_size = min(len(vectors), max(64 * plan.params["nlist"], 10_000))
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), sample_size, replace=False))
    index.train(normalized(vectors[rows]))


def set_search_params(index, kind: str, params: dict) -> None:
    """Apply the query-time parameters (HNSW ``efSearch``, IVF ``nprobe``) recorded with an index."""
    if kind == "hnsw":
        index.hnsw.efSearch = int(params["ef_search"])
    elif kind == "ivf-pq":
        index.nprobe = int(params["nprobe"])


def index_paths_for(embeddings: Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """``(index file, its JSON)``: ``out`` (``.faiss``) or the default beside / inside the embeddings."""
    if out is None:
        out = embeddings / "index.faiss" if embeddings.is_dir() else embeddings.with_suffix(".faiss")
    out = Path(out)
    return out, out.with_suffix(".json")


def build_index(
    embeddings: str | Path,
    out: str | Path | None = None,
    kind: str = "auto",
    memory: str | int | None = None,
    vectors: str | None = None,
    recall_queries: int = 1000,
    chunk: int = 65536,
    seed: int = 0,
    progress: bool = True,
) -> IndexBuild:
    """Build a FAISS index over embeddings and measure its recall@10 against exact search.

    Args:
        embeddings: a folder written by ``vfm embed --out DIR`` or a ``.safetensors`` file.
        out: the ``.faiss`` file; None: the default (see the module docstring).
        kind: ``auto``, ``flat``, ``ivf-pq`` or ``hnsw``.
        memory: the budget of the index (``4GB`` or bytes); None: 4 GB.
        vectors: the tensor to index; None: :func:`default_vectors_key`.
        recall_queries: rows used as queries to measure recall (approximate kinds).
        chunk: rows read at a time.
        seed: picks the training sample and the recall queries.
        progress: progress bar on stderr.

    Raises:
        VfmError: FAISS missing (naming the extra), bad arguments, unreadable embeddings.
    """
    faiss = require_faiss()
    embeddings = Path(embeddings).expanduser()
    view = open_embeddings(embeddings)
    key = vectors or default_vectors_key(view)
    rows = view[key]
    if len(rows.shape) != 2:
        raise DataError(f"--vectors {key} is not a vector per row (shape {rows.shape[1:]}); index a summary tensor")
    budget = parse_memory(memory) if isinstance(memory, str) else memory
    plan = plan_index(len(rows), rows.shape[1], kind, budget)
    started = time.monotonic()
    index = _make_index(faiss, plan, rows.shape[1])
    _train(index, rows, plan, seed)
    bar = Progress(len(rows), f"index {plan.kind}", enabled=progress, unit="vec")
    for _, block in rows.chunks(chunk):
        index.add(normalized(block))
        bar.update(len(block))
    bar.close()
    set_search_params(index, plan.kind, plan.params)
    seconds = time.monotonic() - started
    recall, codes_recall, num_queries = _measure_recall(index, plan, rows, recall_queries, chunk, seed)
    index_path, meta_path = index_paths_for(embeddings, out)
    meta = {
        "format": "vfmkit.index/1",
        "kind": plan.kind,
        "params": plan.params,
        "vectors": key,
        "dim": int(rows.shape[1]),
        "num_rows": len(rows),
        "embeddings": str(embeddings),
        "facts": {name: view.facts.get(name) for name in FACT_KEYS},
        "recall_at_10": recall,
        "recall_at_10_codes_only": codes_recall,
        "recall_queries": num_queries,
        "build_seconds": round(seconds, 3),
        "paths": view.paths,
    }
    size = _write_index(faiss, index, index_path, meta_path, meta)
    return IndexBuild(index_path, meta_path, plan.kind, plan.params, len(rows), int(rows.shape[1]), key, recall,
                      num_queries, seconds, size, codes_recall)  # fmt: skip


def _measure_recall(index, plan: IndexPlan, rows: RowArray, queries: int, chunk: int, seed: int):
    """``(recall@10, IVF-PQ codes-only recall@10 or None, queries used)`` of an approximate index against exact
    search, with rows as queries; ``(None, None, 0)`` for ``flat`` (exact by construction)."""
    if plan.kind == "flat":
        return None, None, 0
    picks = np.sort(np.random.default_rng(seed + 1).choice(len(rows), min(queries, len(rows)), replace=False))
    _, exact = exact_search(rows, rows[picks], 10, chunk)
    _, approximate = search_index(index, plan.kind, rows[picks], 10, rows)
    codes = None
    if plan.kind == "ivf-pq":
        codes = recall_at_k(index.search(normalized(rows[picks]), 10)[1], exact, 10)
    return recall_at_k(approximate, exact, 10), codes, len(picks)


def _write_index(faiss, index, index_path: Path, meta_path: Path, meta: dict) -> int:
    """Write the index (straight to its file, no copy in memory) and then its JSON, atomically; the index bytes."""
    try:
        with atomic_output(index_path) as tmp:
            faiss.write_index(index, str(tmp))
        size = index_path.stat().st_size
        atomic_write_text(meta_path, json.dumps({**meta, "bytes": size}) + "\n")
    except OSError as exc:
        raise DataError(f"cannot write the index {index_path}: {exc.strerror or exc}") from exc
    except RuntimeError as exc:  # FAISS's own I/O errors
        raise DataError(f"cannot write the index {index_path}: {' '.join(str(exc).split())[:300]}") from None
    return size


@dataclass
class LoadedIndex:
    """An index read back: the FAISS object (search parameters applied) and its JSON record."""

    index: object
    meta: dict
    rerank_rows: RowArray | None = None

    @property
    def paths(self) -> list[str]:
        return self.meta["paths"]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 (q, k) cosine scores and int64 (q, k) rows (-1: none) of ``queries`` (q, d) (normalised here)."""
        return search_index(self.index, self.meta["kind"], queries, min(k, len(self.paths)), self.rerank_rows)


def search_index(index, kind: str, queries: np.ndarray, k: int, rerank_rows: RowArray | None = None):
    """Search a FAISS index; for ``ivf-pq`` with the vectors at hand, ``RERANK_FACTOR`` x k candidates are re-scored
    with the exact vectors (read from the memory-mapped embeddings, not held in RAM) and the best k kept.

    Returns:
        float32 (q, k) scores (descending) and int64 (q, k) rows (-1 where fewer than k).
    """
    queries = normalized(queries)
    if kind != "ivf-pq" or rerank_rows is None:
        return index.search(queries, k)
    _, candidates = index.search(queries, min(k * RERANK_FACTOR, index.ntotal))
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    rows = np.full((len(queries), k), -1, dtype=np.int64)
    for position, found in enumerate(candidates):
        found = np.unique(found[found >= 0])
        exact = normalized(rerank_rows[found]) @ queries[position]
        best = np.argsort(-exact, kind="stable")[:k]
        scores[position, : len(best)], rows[position, : len(best)] = exact[best], found[best]
    return scores, rows


def load_index(path: str | Path) -> LoadedIndex:
    """Read ``<name>.faiss`` and its ``<name>.json``; ``path`` may also be an embeddings folder holding
    ``index.faiss``.

    Raises:
        VfmError: FAISS missing; DataError: no index there, or a record that does not match the index.
    """
    faiss = require_faiss()
    path = Path(path).expanduser()
    index_path, meta_path = index_paths_for(path) if path.suffix != ".faiss" else (path, path.with_suffix(".json"))
    if not index_path.is_file() or not meta_path.is_file():
        raise DataError(f"no index at {index_path} (build one with: vfm index build {path})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        index = faiss.read_index(str(index_path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"cannot read the index {index_path}: {' '.join(str(exc).split())[:300]}") from None
    if index.ntotal != len(meta.get("paths", [])):
        raise DataError(f"{index_path} holds {index.ntotal} vectors but {meta_path.name} lists {len(meta['paths'])}")
    set_search_params(index, meta["kind"], meta["params"])
    return LoadedIndex(index, meta, _rerank_rows(meta) if meta["kind"] == "ivf-pq" else None)


def _rerank_rows(meta: dict) -> RowArray | None:
    """The indexed vectors, memory-mapped from the embeddings the index was built on; None when they are gone or
    changed (then IVF-PQ answers from its codes alone)."""
    try:
        rows = open_embeddings(meta["embeddings"])[meta["vectors"]]
    except VfmError:
        return None
    return rows if len(rows) == meta["num_rows"] else None

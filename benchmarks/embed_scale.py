"""Embeddings at scale: memory and speed of `vfm embed --out FOLDER`, one process vs `--devices 2`, and FAISS indexes.

    python benchmarks/embed_scale.py [--tables embed index] [--sizes 2000 20000] [--rounds 3]
                                     [--index-sizes 100000 1000000] [--hnsw-max 100000] [--work DIR]

Tables:
- ``embed``: ``vfm embed`` of N generated 64 x 64 PNGs with the tiny test model (``test-radio-v2-tiny``, 64 px,
  ``--what both``) in three ways: streaming into a shard folder (1 process), the same with ``--devices 2`` (two gloo
  ranks), and today's single ``.safetensors`` file (rows held in memory). Each run is a fresh process; peak RSS is
  the process's own maximum resident set (``ru_maxrss``; for ``--devices 2`` the largest rank), throughput is
  images / wall seconds of the whole command (model load included). The modes alternate for ``--rounds`` rounds
  (median seconds, largest peak RSS reported) so that load on a shared machine hits them alike; images per
  CPU-second (this process and its children: decoding workers, ranks) is the steadier measure on a busy machine.
- ``index``: generated clustered vectors (d = 768, 1,000 Gaussian clusters, noise std 0.5 per dimension around
  centres of std 1) stored as a shard folder; for each kind a fresh process builds the index, reports build time,
  recall@10 against exact search (1,000 queries) and its peak RSS, then answers 200 single queries through
  ``load_index`` (p50 / p95 latency). ``flat`` is the exact baseline. HNSW is built up to ``--hnsw-max`` rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODEL = "test-radio-v2-tiny"


def _child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def _run_child(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=_child_env()
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def child_embed(source: str, out: str, devices: str) -> None:
    """Run `vfm embed` in this process and print seconds and peak RSS as JSON."""
    import torch

    torch.set_num_threads(1)
    from vfmkit.cli.main import main

    args = ["embed", source, "-m", MODEL, "-r", "64", "--what", "both", "--out", out, "-b", "64"]
    if devices != "1":
        args += ["--devices", devices]
    started = time.perf_counter()
    try:
        main(args)
    except SystemExit as done:
        if done.code:
            raise
    seconds = time.perf_counter() - started
    own, children = _peak_mb()
    cpu = sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "rss_mb": own, "children_rss_mb": children}))


def child_index(folder: str, kind: str, queries: str) -> None:
    """Build one index kind, measure single-query latency through load_index, print JSON."""
    from vfmkit.features.index import build_index, load_index
    from vfmkit.features.reader import open_embeddings

    build = build_index(folder, Path(folder) / f"{kind}.faiss", kind=kind, memory="20GB", progress=False)
    loaded = load_index(build.index_path)
    rows = open_embeddings(folder)["summary"]
    picks = np.random.default_rng(7).choice(len(rows), int(queries), replace=False)
    latencies = []
    for row in picks:
        query = rows[int(row)][None]
        started = time.perf_counter()
        loaded.search(query, 10)
        latencies.append(1000 * (time.perf_counter() - started))
    own, _ = _peak_mb()
    print(json.dumps({
        "kind": build.kind, "params": build.params, "build_s": build.seconds, "recall": build.recall_at_10,
        "codes_recall": build.recall_codes_only,
        "bytes": build.bytes, "rss_mb": own, "p50_ms": statistics.median(latencies),
        "p95_ms": float(np.percentile(latencies, 95)),
    }))  # fmt: skip


def make_images(folder: Path, count: int) -> Path:
    """``count`` 64 x 64 PNGs of random blocks (made once per folder)."""
    from PIL import Image

    if folder.is_dir() and len(list(folder.glob("*.png"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        grid = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(grid).resize((64, 64), Image.NEAREST).save(folder / f"{index:06d}.png")
    return folder


EMBED_MODES = (("folder", "1"), ("single file", "1"), ("folder", "2"))


def embed_table(work: Path, sizes: list[int], rounds: int) -> None:
    """Each size: ``rounds`` rounds of the three modes in turn; the median seconds and the largest peak RSS."""
    print(f"\n| images | output | processes | peak RSS (MB) | seconds (median of {rounds}) | img/s | img per CPU-s |")
    print("|---|---|---|---|---|---|---|")
    rows = {}
    for count in sizes:
        images = make_images(work / f"images-{count}", count)
        runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {mode: [] for mode in EMBED_MODES}
        for _ in range(rounds):
            for name, devices in EMBED_MODES:
                out = work / (f"emb{devices}-{count}" + (".safetensors" if name == "single file" else ""))
                subprocess.run(["rm", "-rf", str(out)], check=True)
                result = _run_child("embed", str(images), str(out), devices)
                rss = result["rss_mb"] if devices == "1" else result["children_rss_mb"]
                runs[(name, devices)].append((rss, result["seconds"], result["cpu_s"]))
        for name, devices in EMBED_MODES:
            rss = max(r for r, _, _ in runs[(name, devices)])
            seconds = statistics.median(s for _, s, _ in runs[(name, devices)])
            cpu = statistics.median(c for _, _, c in runs[(name, devices)])
            rows[(count, name, devices)] = (rss, seconds, cpu)
            print(f"| {count:,} | {name} | {devices} | {rss:.0f} | {seconds:.1f} | {count / seconds:.0f} | "
                  f"{count / cpu:.0f} |", flush=True)  # fmt: skip
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        for name, devices in EMBED_MODES:
            ratio = rows[(large, name, devices)][0] / rows[(small, name, devices)][0]
            print(f"peak RSS {large:,} / {small:,} images, {name} x{devices}: {ratio:.2f}")
    for count in sizes:
        speed = rows[(count, "single file", "1")][1] / rows[(count, "folder", "1")][1]
        per_cpu = rows[(count, "single file", "1")][2] / rows[(count, "folder", "1")][2]
        two = rows[(count, "folder", "1")][1] / rows[(count, "folder", "2")][1]
        print(f"{count:,} images: streaming / in-memory throughput {speed:.2f}x (per CPU-second {per_cpu:.2f}x); "
              f"--devices 2 / 1 process {two:.2f}x")  # fmt: skip


def write_vector_folder(folder: Path, count: int, dim: int = 768, chunk: int = 100_000) -> Path:
    """Clustered vectors as a shard folder (made once), written ``chunk`` rows at a time."""
    import torch

    from vfmkit.features.shards import RunFacts, complete_shard, write_manifest, write_shard

    facts = RunFacts("generated", "-", (0, 0), "summary", (), "numpy", "fp32", chunk, f"clusters-{count}", count)
    folder.mkdir(parents=True, exist_ok=True)
    centres = np.random.default_rng(0).normal(size=(1000, dim)).astype(np.float32)
    records = []
    for index, first in enumerate(range(0, count, chunk)):
        record = complete_shard(folder, index, facts)
        if record is None:
            rng = np.random.default_rng(index + 1)
            size = min(chunk, count - first)
            block = centres[rng.integers(0, 1000, size)] + 0.5 * rng.normal(size=(size, dim)).astype(np.float32)
            items = [{"path": f"v{first + i:08d}", "row": i, "width": None, "height": None, "skipped": False,
                      "reason": None} for i in range(size)]  # fmt: skip
            record = write_shard(folder, index, first, {"summary": torch.from_numpy(block)}, items, facts)
        records.append(record)
    write_manifest(folder, facts, records, {"summary": [dim]})
    return folder


def index_table(work: Path, sizes: list[int], hnsw_max: int, queries: int = 200) -> None:
    print("\n| vectors | kind | parameters | build s | index MB | peak RSS MB | recall@10 | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for count in sizes:
        folder = write_vector_folder(work / f"vectors-{count}", count)
        kinds = ["flat", "ivf-pq"] + (["hnsw"] if count <= hnsw_max else [])
        for kind in kinds:
            r = _run_child("index", str(folder), kind, str(queries))
            params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
            recall = "1 (exact)" if r["recall"] is None else f"{r['recall']:.3f}"
            if r["codes_recall"] is not None:
                recall += f" ({r['codes_recall']:.3f} codes only)"
            print(f"| {count:,} | {r['kind']} | {params} | {r['build_s']:.1f} | {r['bytes'] / 2**20:.0f} | "
                  f"{r['rss_mb']:.0f} | {recall} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} |", flush=True)  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        {"embed": child_embed, "index": child_index}[sys.argv[2]](*sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=["embed", "index"], choices=["embed", "index"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[2000, 20000])
    parser.add_argument("--index-sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--hnsw-max", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="embed table: runs of each mode (median reported)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vfm-embed-scale"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} at start")
    if "embed" in args.tables:
        embed_table(args.work, args.sizes, args.rounds)
    if "index" in args.tables:
        index_table(args.work, args.index_sizes, args.hnsw_max)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()

"""``vfm index build``, ``vfm search``, ``vfm dedup`` and ``vfm serve``: commands over an embeddings collection (a
folder written by ``vfm embed --out DIR``, or a single ``.safetensors``); thin shims with lazy imports, added to the
app by :func:`register`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vfmkit.errors import VfmError

EMBEDDINGS_HELP = "embeddings: a folder written by `vfm embed --out DIR`, or a .safetensors file"
INDEX_HELP = "the .faiss index to use (default: EMBEDDINGS/index.faiss when it exists, else exact search)"
TEXT_MODEL_HELP = (
    "text tower for --text: a CLIP id (`vfm clip models`) or a `vfm clip train` run; default: the CLIP model whose "
    "image tower embedded the collection"
)

index_app = typer.Typer(help="Build a FAISS index over embeddings (`vfm index build EMBEDDINGS`).")


def register(app: typer.Typer) -> None:
    """Add ``index``, ``search``, ``dedup`` and ``serve`` to the ``vfm`` app."""
    app.add_typer(index_app, name="index")
    index_app.command("build")(index_build)
    app.command("search")(search)
    app.command("dedup")(dedup)
    app.command("serve")(serve)


def index_build(
    embeddings: Path = typer.Argument(..., help=EMBEDDINGS_HELP),
    kind: str = typer.Option("auto", "--kind", help="auto, flat (exact), ivf-pq or hnsw"),
    memory: str = typer.Option("4GB", "--memory", help="budget of the index, e.g. 4GB or 512MB"),
    vectors: str | None = typer.Option(None, "--vectors", help="tensor to index (default: a text-aligned summary)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="the .faiss file (default: inside/beside EMBEDDINGS)"),
    recall_queries: int = typer.Option(1000, "--recall-queries", min=1, help="rows used to measure recall@10"),
) -> None:
    """Build a FAISS index (cosine) over the embeddings; report its recall@10 against exact search."""
    from vfmkit.features.index import build_index

    if out is not None and out.suffix != ".faiss":
        raise VfmError(f"--out must name a .faiss file, got {out}")
    result = build_index(embeddings, out, kind, memory, vectors, recall_queries)
    params = ", ".join(f"{k}={v}" for k, v in result.params.items()) or "exact"
    typer.echo(f"index {result.kind} ({params}) over {result.num_rows} x {result.dim} vectors ({result.vectors})")
    if result.recall_at_10 is None:
        typer.echo("recall@10: 1.0 (exact search)")
    else:
        typer.echo(f"recall@10 vs exact search: {result.recall_at_10:.4f} on {result.recall_queries} queries")
        if result.recall_codes_only is not None:
            typer.echo(
                f"  (IVF-PQ codes alone, before re-scoring with the exact vectors: {result.recall_codes_only:.4f})"
            )
    typer.echo(f"built in {result.seconds:.1f} s, {result.bytes / 2**20:.1f} MiB: {result.index_path}")


def _text_model(name: str | None):
    """The CLIP model named by --text-model (registry id or `vfm clip train` run); None when not given."""
    if name is None:
        return None
    from vfmkit.tasks.clip.hooks import load_for_inference

    return load_for_inference(name)[0]


def search(
    embeddings: Path = typer.Argument(..., help=EMBEDDINGS_HELP),
    image: Path | None = typer.Option(None, "--image", help="query image"),
    text: str | None = typer.Option(None, "--text", help="query text (needs a text tower)"),
    k: int = typer.Option(20, "-k", "--k", min=1, help="results"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    index: Path | None = typer.Option(None, "--index", help=INDEX_HELP),
    text_model: str | None = typer.Option(None, "--text-model", help=TEXT_MODEL_HELP),
) -> None:
    """The images nearest to a query image or text."""
    from vfmkit.features.search import Collection, ImageQueries, TextQueries

    if (image is None) == (text is None):
        raise VfmError("give exactly one of --image PATH or --text TEXT")
    collection = Collection(embeddings, index)
    if image is not None:
        vectors, query = ImageQueries(collection)([image]), str(image)
    else:
        vectors, query = TextQueries(collection, _text_model(text_model))([text]), text
    hits = collection.search(vectors, k)[0]
    if as_json:
        results = [{"rank": h.rank, "score": round(h.score, 6), "path": h.path, "row": h.row} for h in hits]
        typer.echo(json.dumps({"query": query, "kind": collection.kind, "results": results}, indent=2))
        return
    from vfmkit.cli.main import aligned_table

    typer.echo(aligned_table(("rank", "score", "path"), [(str(h.rank), f"{h.score:.4f}", h.path) for h in hits]))


def dedup(
    embeddings: Path = typer.Argument(..., help=EMBEDDINGS_HELP),
    threshold: float = typer.Option(0.95, "--threshold", "-t", help="cosine similarity that makes a duplicate"),
    out: Path = typer.Option(Path("duplicates.csv"), "--out", "-o", help="CSV: group, path, score"),
    sheet: Path | None = typer.Option(None, "--sheet", help="contact-sheet PNG (default: beside --out)"),
    index: Path | None = typer.Option(None, "--index", help=INDEX_HELP),
) -> None:
    """Groups of near-duplicate images (cosine >= threshold), as a CSV and a contact sheet of the largest groups."""
    from vfmkit.features.dedup import find_duplicates, write_contact_sheet, write_csv

    result = find_duplicates(embeddings, threshold, index)
    members = sum(len(g.rows) for g in result.groups)
    typer.echo(
        f"{len(result.groups)} group(s) of near-duplicates ({members} images) among {result.num_rows} "
        f"at cosine >= {threshold:g} ({result.num_pairs} pairs)"
    )
    typer.echo(f"csv:           {write_csv(result, out)}")
    picture = write_contact_sheet(result, sheet or out.with_suffix(".png"))
    if picture is not None:
        typer.echo(f"contact sheet: {picture}")


def serve(
    embeddings: Path = typer.Argument(..., help=EMBEDDINGS_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (127.0.0.1: this machine only)"),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port"),
    index: Path | None = typer.Option(None, "--index", help=INDEX_HELP),
    text_model: str | None = typer.Option(None, "--text-model", help=TEXT_MODEL_HELP),
    max_upload_mb: float = typer.Option(16.0, "--max-upload-mb", min=0.01, help="largest image upload, MiB"),
) -> None:
    """A search page (text box + image drop zone) and JSON API over the collection."""
    from vfmkit.features.search import Collection, ImageQueries, TextQueries, load_recorded_model
    from vfmkit.features.serve import create_app, require_serve, run_server

    require_serve()
    collection = Collection(embeddings, index)
    backbone = load_recorded_model(collection.facts)
    text_queries, reason = None, ""
    try:
        text_queries = TextQueries(collection, _text_model(text_model), backbone)
    except VfmError as exc:
        if text_model is not None:
            raise
        reason = str(exc)
    app = create_app(collection, ImageQueries(collection, backbone), text_queries, reason, int(max_upload_mb * 2**20))
    typer.echo(f"serving {len(collection.paths)} images ({collection.kind}) on http://{host}:{port}/ (Ctrl-C stops)")
    if reason:
        typer.echo(f"text search unavailable: {reason}")
    run_server(app, host, port)

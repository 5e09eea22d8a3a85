"""``vfm serve``: a search page and a JSON API over an embeddings collection (FastAPI + uvicorn, extra ``[serve]``).

Endpoints:

- ``GET /``: one HTML page (no build step): a text box and an image drop zone; results as thumbnails with scores.
- ``GET /api/info``: the collection (model, vectors, index kind, rows, whether text queries work).
- ``GET /search?text=...&k=20``: text query (needs a text tower, see :mod:`vfmkit.features.search`).
- ``POST /search`` (multipart form: ``image`` file, optional ``k``): image query; uploads larger than
  ``max_upload_bytes`` are refused (413) before they are decoded.
- ``GET /thumbnail?path=...``: a JPEG thumbnail of an indexed image. Only paths of the index are served: anything
  else (``../`` tricks, absolute paths, files beside the collection) is 404, so the page never exposes other files.

Results: ``{"query": ..., "kind": ..., "results": [{"rank", "score", "path", "row", "thumbnail"}]}``.
It binds to 127.0.0.1 unless told otherwise.

(No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations, which name classes imported
inside :func:`create_app`.)
"""

import importlib.util
import io
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import quote

from PIL import Image

from vfmkit.data.images import to_rgb
from vfmkit.data.webdataset import parse_image_ref
from vfmkit.errors import VfmError
from vfmkit.features.search import Collection, SearchHit

INSTALL_HINT = "pip install 'vfmkit[serve]'"
DEFAULT_MAX_UPLOAD = 16 * 1024 * 1024
MAX_K = 200


def require_serve():
    """``(fastapi, uvicorn)``; a :class:`VfmError` naming the extra when they are missing."""
    try:
        import fastapi
        import uvicorn
    except ImportError:
        fastapi = None
    if fastapi is None or importlib.util.find_spec("python_multipart") is None:  # FastAPI's parser of uploads
        raise VfmError(f"vfm serve needs FastAPI, uvicorn and python-multipart: {INSTALL_HINT}")
    return fastapi, uvicorn


def _hits_json(hits: list[SearchHit]) -> list[dict]:
    return [
        {"rank": h.rank, "score": round(h.score, 6), "path": h.path, "row": h.row,
         "thumbnail": f"/thumbnail?path={quote(h.path, safe='')}"}
        for h in hits
    ]  # fmt: skip


def create_app(
    collection: Collection,
    image_queries: Callable | None,
    text_queries: Callable | None = None,
    text_unavailable: str = "",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    thumbnail_side: int = 192,
):
    """The FastAPI application (see the module docstring).

    Args:
        collection: what to search.
        image_queries: images -> (n, d) vectors (:class:`~vfmkit.features.search.ImageQueries`); None: image
            queries are refused.
        text_queries: texts -> (n, d) vectors (:class:`~vfmkit.features.search.TextQueries`); None: refused with
            ``text_unavailable`` as the reason.
        max_upload_bytes: the largest image upload accepted.
        thumbnail_side: longest side of thumbnails, px.
    """
    fastapi, _ = require_serve()
    from fastapi import File, HTTPException, Request, UploadFile
    from fastapi.responses import HTMLResponse, Response

    app = fastapi.FastAPI(title="vfmkit search", docs_url=None, redoc_url=None)
    indexed = frozenset(collection.paths)

    @lru_cache(maxsize=2048)
    def thumbnail(path: str) -> bytes:
        image = parse_image_ref(path).load()
        image.thumbnail((thumbnail_side, thumbnail_side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/api/info")
    def info() -> dict:
        return {
            "model": collection.facts.get("model"),
            "vectors": collection.vectors,
            "kind": collection.kind,
            "rows": len(collection.paths),
            "text": text_queries is not None,
            "text_unavailable": "" if text_queries is not None else text_unavailable,
            "max_upload_bytes": max_upload_bytes,
        }

    @app.get("/search")
    def search_text(text: str = "", k: int = 20) -> dict:
        if not text.strip():
            raise HTTPException(400, "give a text query: /search?text=a+red+car")
        if text_queries is None:
            raise HTTPException(400, text_unavailable or "this collection has no text tower")
        hits = collection.search(text_queries([text]), _bounded(k))[0]
        return {"query": text, "kind": collection.kind, "results": _hits_json(hits)}

    @app.post("/search")
    async def search_image(request: Request, image: UploadFile = File(...), k: int = 20) -> dict:
        declared = int(request.headers.get("content-length") or 0)
        if declared > max_upload_bytes + 65536:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        data = await image.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        if image_queries is None:
            raise HTTPException(400, "image queries are not available for this collection")
        try:
            with Image.open(io.BytesIO(data)) as opened:
                opened.load()
                query = to_rgb(opened)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise HTTPException(400, f"the upload is not a readable image: {err}") from None
        hits = collection.search(image_queries([query]), _bounded(k))[0]
        return {"query": image.filename, "kind": collection.kind, "results": _hits_json(hits)}

    @app.get("/thumbnail")
    def serve_thumbnail(path: str) -> Response:
        if path not in indexed:
            raise HTTPException(404, "not an indexed image")
        try:
            return Response(thumbnail(path), media_type="image/jpeg")
        except VfmError as err:
            raise HTTPException(404, f"indexed image no longer readable: {err}") from None

    return app


def _bounded(k: int) -> int:
    return max(1, min(int(k), MAX_K))


def run_server(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` with uvicorn until interrupted."""
    _, uvicorn = require_serve()
    uvicorn.run(app, host=host, port=port, log_level="warning")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vfmkit search</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
form{display:flex;gap:.5rem;margin-bottom:.8rem} input[type=text]{flex:1;font-size:1.1rem;padding:.4rem}
#drop{border:2px dashed #999;border-radius:8px;padding:1rem;text-align:center;color:#666;margin-bottom:1rem}
#drop.over{background:#eef}
#results{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.8rem}
figure{margin:0;background:#f6f6f6;padding:.4rem;border-radius:6px}
figure img{width:100%;height:170px;object-fit:contain;display:block}
figcaption{font-size:.8rem;word-break:break-all} .score{font-weight:bold}
#status{color:#555;margin-bottom:.6rem}
</style></head><body>
<h1>vfmkit search</h1><div id="info"></div>
<form id="textform"><input type="text" id="text" placeholder="describe what you look for">
<input type="number" id="k" value="20" min="1" max="200" style="width:5rem"><button>Search</button></form>
<div id="drop">Drop an image here, or <input type="file" id="file" accept="image/*"></div>
<div id="status"></div><div id="results"></div>
<script>
const $=id=>document.getElementById(id);
function show(data){
  $("status").textContent=data.results.length+" results ("+data.kind+") for "+data.query;
  $("results").innerHTML="";
  for(const r of data.results){
    const f=document.createElement("figure");
    const img=document.createElement("img");img.src=r.thumbnail;img.alt=r.path;img.className="thumb";
    const c=document.createElement("figcaption");
    c.innerHTML='<span class="score"></span> <span class="path"></span>';
    c.querySelector(".score").textContent=r.rank+". "+r.score.toFixed(3);
    c.querySelector(".path").textContent=r.path;
    f.append(img,c);$("results").append(f);
  }
}
async function answer(response){
  const data=await response.json();
  if(!response.ok){$("status").textContent="error: "+(data.detail||response.status);$("results").innerHTML="";return;}
  show(data);
}
$("textform").addEventListener("submit",async e=>{
  e.preventDefault();
  const q=encodeURIComponent($("text").value);
  answer(await fetch("/search?text="+q+"&k="+$("k").value));
});
async function sendImage(file){
  const body=new FormData();body.append("image",file);
  answer(await fetch("/search?k="+$("k").value,{method:"POST",body}));
}
const drop=$("drop");
drop.addEventListener("dragover",e=>{e.preventDefault();drop.classList.add("over");});
drop.addEventListener("dragleave",()=>drop.classList.remove("over"));
drop.addEventListener("drop",e=>{e.preventDefault();drop.classList.remove("over");
  if(e.dataTransfer.files.length)sendImage(e.dataTransfer.files[0]);});
$("file").addEventListener("change",e=>{if(e.target.files.length)sendImage(e.target.files[0]);});
fetch("/api/info").then(r=>r.json()).then(i=>{
  $("info").textContent=i.rows+" images, "+i.model+" ("+i.vectors+", "+i.kind+")"+
    (i.text?"":" - text search unavailable: "+i.text_unavailable);
});
</script></body></html>
"""

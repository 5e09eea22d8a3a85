"""`vfm serve`: every endpoint through FastAPI's TestClient, path traversal and oversized uploads refused, and (slow)
the page in a real headless Chromium: type a query, see result thumbnails."""

from __future__ import annotations

import io
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image
from tests.features.test_sharded_embed import make_images

from vfmkit.cli.main import main
from vfmkit.features.search import Collection, ImageQueries
from vfmkit.features.serve import create_app
from vfmkit.features.sharded import embed_to_folder

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


class WordQueries:
    """A stand-in text tower for the page tests: each word names a row (``img003`` -> the vector of that row)."""

    def __init__(self, collection: Collection) -> None:
        self.vectors = collection.view[collection.vectors]
        self.rows = {Path(path).stem: row for row, path in enumerate(collection.paths)}

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.vectors[np.array([self.rows[text.split()[0]] for text in texts])]


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Collection:
    images = make_images(tmp_path_factory.mktemp("serve") / "images", 8, seed=2)
    (images.parent / "secret.txt").write_text("not an indexed image")
    return Collection(embed_to_folder(images, "test-radio-v2-tiny", images.parent / "emb", 32, progress=False).out)


@pytest.fixture(scope="module")
def client(collection: Collection) -> TestClient:
    app = create_app(collection, ImageQueries(collection), WordQueries(collection), max_upload_bytes=50_000)
    return TestClient(app)


def _png(path: str | Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="PNG")
    return buffer.getvalue()


def test_page_info_and_text_search(client: TestClient, collection: Collection) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<input type="text" id="text"' in page.text and "drop" in page.text
    info = client.get("/api/info").json()
    assert info == {
        "model": "test-radio-v2-tiny", "vectors": "summary", "kind": "exact", "rows": 8, "text": True,
        "text_unavailable": "", "max_upload_bytes": 50_000,
    }  # fmt: skip
    found = client.get("/search", params={"text": "img005", "k": 3}).json()
    assert found["query"] == "img005" and len(found["results"]) == 3
    first = found["results"][0]
    assert first["path"] == collection.paths[5] and first["rank"] == 1 and first["score"] > 0.9999
    assert first["thumbnail"] == f"/thumbnail?path={quote(collection.paths[5], safe='')}"
    assert client.get("/search", params={"text": "  "}).status_code == 400


def test_image_upload_search_and_thumbnails(client: TestClient, collection: Collection) -> None:
    upload = {"image": ("query.png", _png(collection.paths[2]), "image/png")}
    found = client.post("/search?k=2", files=upload).json()
    assert found["query"] == "query.png" and found["results"][0]["path"] == collection.paths[2]
    thumbnail = client.get(found["results"][0]["thumbnail"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 192
    broken = client.post("/search", files={"image": ("x.png", b"not an image", "image/png")})
    assert broken.status_code == 400 and "not a readable image" in broken.json()["detail"]


def test_path_traversal_and_oversized_uploads_are_refused(client: TestClient, collection: Collection) -> None:
    folder = Path(collection.paths[0]).parent
    for path in (
        str(folder.parent / "secret.txt"),
        f"{folder}/../secret.txt",
        collection.paths[0] + "/../../secret.txt",
        "/etc/passwd",
        "../../../../etc/passwd",
        str(folder / "img000.png").replace("img000", "img999"),
    ):
        response = client.get("/thumbnail", params={"path": path})
        assert response.status_code == 404, path
        assert response.json()["detail"] == "not an indexed image"
    big = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > 50_000
    refused = client.post("/search", files={"image": ("big.png", buffer.getvalue(), "image/png")})
    assert refused.status_code == 413 and "larger than 50000 bytes" in refused.json()["detail"]


def test_without_a_text_tower_text_queries_say_why(collection: Collection) -> None:
    app = create_app(collection, None, None, "test-radio-v2-tiny (summary) has no text tower")
    client = TestClient(app)
    response = client.get("/search", params={"text": "a dog"})
    assert response.status_code == 400 and "has no text tower" in response.json()["detail"]
    assert client.get("/api/info").json()["text"] is False
    upload = {"image": ("q.png", _png(collection.paths[0]), "image/png")}
    assert client.post("/search", files=upload).status_code == 400


def test_missing_extra_names_it(collection: Collection, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(collection.location)])
    assert exit_info.value.code == 2
    assert "pip install 'vfmkit[serve]'" in capsys.readouterr().err


def _chromium() -> str | None:
    return next((path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_the_page_in_a_real_headless_browser(collection: Collection) -> None:
    """Types a query into the page served by uvicorn and waits for the result thumbnails to load."""
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    import uvicorn

    port = _free_port()
    app = create_app(collection, ImageQueries(collection), WordQueries(collection))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.fill("#text", "img004")
            page.press("#text", "Enter")
            page.wait_for_selector("img.thumb", timeout=30_000)
            page.wait_for_function(
                "[...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)"
            )
            thumbnails = page.query_selector_all("img.thumb")
            assert len(thumbnails) == 8
            assert thumbnails[0].get_attribute("alt") == collection.paths[4]
            assert "8 results" in page.inner_text("#status")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)

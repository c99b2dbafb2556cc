"""Issue 17: one request cannot stall the server or fill its memory, and errors give nothing away."""

from __future__ import annotations

import hashlib
import base64
import io
import re
import struct
import threading
import time
import zlib

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageFile

import metaembed
from metaembed import MetaEmbed
from metaembed.inputs import load_image
from metaembed.serve import create_app
from tests.test_serve_api import DOCUMENTS, KEY, build_service, png_bytes

WITH_KEY = {"X-API-Key": KEY}


def png_header_only(width: int, height: int) -> bytes:
    """A few hundred bytes that declare a width x height RGB PNG (an image bomb's header; the data is short)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def text_model(minilm_path) -> MetaEmbed:
    return MetaEmbed.from_backbone(minilm_path, 4, 8, device="cpu")


@pytest.fixture(scope="module")
def vlm(tiny_qwen2_vl_path) -> MetaEmbed:
    return MetaEmbed.from_backbone(tiny_qwen2_vl_path, 2, 4, device="cpu")


def text_client(model, folder, **settings) -> TestClient:
    return TestClient(create_app(build_service(model, folder, api_key=KEY, **settings)))


# ---------------------------------------------------------------------------------- 4. query size
def test_a_long_query_is_refused_before_any_work(text_model, tmp_path, monkeypatch):
    client = text_client(text_model, tmp_path, max_query_chars=100)
    calls = []
    monkeypatch.setattr(text_model, "encode_query", lambda *a, **k: calls.append(a) or pytest.fail("encoded"))
    for response in (client.post("/search", json={"query": "x" * 101}),
                     client.post("/search/upload", data={"query": "x" * 101})):
        assert response.status_code == 413
        assert response.json()["detail"] == ("the query is 101 characters long; this server takes at most 100 "
                                              "(the --max-query-chars setting)")
    # A /search body longer than the longest query can need is refused from its Content-Length, unread.
    huge = client.post("/search", json={"query": "x" * 1_000_000})
    assert huge.status_code == 413 and huge.json()["detail"] == (
        "the request body is larger than this route's limit of 5,296 bytes (the --max-query-chars setting)")
    assert calls == []
    monkeypatch.undo()
    assert client.post("/search", json={"query": "x" * 100}).status_code == 200


def test_text_is_cut_before_tokenizing(tiny_bert_path, monkeypatch):
    model = MetaEmbed.from_backbone(tiny_bert_path, 2, 4, device="cpu", max_seq_length=24)
    assert model.max_text_chars("query") == 24 * 32
    seen: list[int] = []
    original = model.backbone.preprocess

    def spy(inputs, *args, **kwargs):
        seen.extend(len(item) for item in inputs if isinstance(item, str))
        return original(inputs, *args, **kwargs)

    monkeypatch.setattr(model.backbone, "preprocess", spy)
    huge = "word " * 400_000  # 2 MB
    with torch.no_grad():
        started = time.perf_counter()
        vectors = model.encode_query([huge, {"text": huge}])
        took = time.perf_counter() - started
        cut = model.encode_query([huge[:2000]])
    assert max(seen) <= 24 * 32 and took < 5
    torch.testing.assert_close(vectors[0], cut[0])  # the tokens kept are the same


# ---------------------------------------------------------------------------------- 5. body size, key first
def test_the_key_is_checked_before_the_body_is_read(text_model, tmp_path):
    client = text_client(text_model, tmp_path)
    broken = client.post("/items", content=b'{"items": [not json', headers={"content-type": "application/json"})
    assert broken.status_code == 401 and broken.json() == {"detail": "this endpoint needs a valid X-API-Key header"}
    huge = client.post("/items", content=b"{" * 200_000, headers={"content-type": "application/json", "X-API-Key": "x"})
    assert huge.status_code == 401
    form = client.post("/items/upload", content=b"--b\r\nnot a form", headers={"content-type": "multipart/form-data; boundary=b"})
    assert form.status_code == 401
    assert client.post("/items/delete", content=b"[", headers={"content-type": "application/json"}).status_code == 401


def test_request_bodies_are_capped_on_every_route(text_model, tmp_path):
    client = text_client(text_model, tmp_path, max_body_bytes=10_000)
    message = "the request body is larger than this route's limit of 10,000 bytes (the --max-body-mb setting)"
    for path, headers in (("/search", {}), ("/items", WITH_KEY), ("/search/upload", {})):
        response = client.post(path, json={"query": "x" * 20_000, "items": []}, headers=headers)
        assert response.status_code == 413 and response.json() == {"detail": message}, path

    def streamed():  # no Content-Length: the bytes are counted as they arrive
        yield b'{"query": "'
        for _ in range(20):
            yield b"x" * 1000
        yield b'"}'

    response = client.post("/search", content=streamed(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json() == {"detail": message}
    assert client.post("/search", json={"query": "text editor"}).status_code == 200


# ---------------------------------------------------------------------------------- 6. images
def test_a_text_model_refuses_images_before_decoding(text_model, tmp_path):
    client = text_client(text_model, tmp_path)
    response = client.post("/search/upload", data={"query": "x"}, files={"image": ("bomb.png", png_header_only(13_000, 13_000))})
    assert response.status_code == 400 and response.json()["detail"] == "this server's model is text-only: it takes no images"


def test_the_pixel_budget_is_checked_from_the_header(vlm, tmp_path, monkeypatch):
    client = TestClient(create_app(build_service(vlm, tmp_path, max_image_pixels=1000)))
    small = client.post("/search/upload", files={"image": ("wide.png", png_bytes((1, 2, 3)), "image/png")})
    assert small.status_code == 413
    assert small.json()["detail"] == ("image 'wide.png' is 40x30 = 1,200 pixels, more than the 1,000 an image may "
                                      "decode to (the max_image_pixels setting)")
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    client = TestClient(create_app(build_service(vlm, tmp_path / "default")))
    bomb = client.post("/items/upload", data={"id": "b"}, files={"image": ("bomb.png", png_header_only(13_000, 13_000))})
    assert bomb.status_code == 413 and "'bomb.png' is 13000x13000 = 169,000,000 pixels, more than the 50,000,000" in bomb.text
    assert decoded == [] and not (tmp_path / "default" / "media").exists()


def test_images_are_decoded_off_the_event_loop(vlm, tmp_path, monkeypatch):
    original, started = ImageFile.ImageFile.load, threading.Event()

    def slow_load(self):
        if not self.tile:
            return original(self)
        started.set()
        time.sleep(1.5)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", slow_load)
    with TestClient(create_app(build_service(vlm, tmp_path))) as client:  # one event loop for every request
        answers = []
        upload = threading.Thread(target=lambda: answers.append(client.post(
            "/search/upload", files={"image": ("q.png", png_bytes((9, 9, 9)), "image/png")})))
        upload.start()
        assert started.wait(30)
        began = time.perf_counter()
        assert client.get("/health").status_code == 200
        health_took = time.perf_counter() - began
        upload.join()
    assert health_took < 0.75, f"/health waited {health_took:.2f} s for a decode"
    assert answers[0].status_code == 200, answers[0].text


def test_concurrent_decodes_are_bounded(vlm, tmp_path, monkeypatch):
    original, lock, state = ImageFile.ImageFile.load, threading.Lock(), {"now": 0, "most": 0}

    def counted_load(self):
        if not self.tile:  # already decoded: not a decode
            return original(self)
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counted_load)
    app = create_app(build_service(vlm, tmp_path, max_concurrent_decodes=1, max_waiting_decodes=1))
    with TestClient(app) as client:
        codes = []
        threads = [threading.Thread(target=lambda: codes.append(client.post(
            "/search/upload", files={"image": ("q.png", png_bytes((9, 9, 9)), "image/png")}).status_code)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert state["most"] == 1 and 200 in codes and set(codes) <= {200, 503}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_python_api_has_the_same_pixel_budget(vlm, tmp_path):
    from metaembed.inputs import TooLargeError

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(13_000, 13_000))
    with pytest.raises(TooLargeError, match=r"item 0 .*bomb\.png' is 13000x13000 = 169,000,000 pixels, more than the 50,000,000"):
        vlm.encode_document([str(bomb)])
    with pytest.raises(TooLargeError, match="13000x13000"):
        load_image(Image.open(bomb))  # opened lazily: still only the header was read
    bomb.write_bytes(png_header_only(20_000, 20_000))  # beyond PIL's own limit, which names only the pixel count
    with pytest.raises(TooLargeError, match=r"bomb\.png' is 400,000,000 pixels, more than the 50,000,000"):
        vlm.encode_document([bomb])
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (1, 2, 3)).save(small)
    vlm.max_image_pixels = 1000
    try:
        with pytest.raises(TooLargeError, match=r"small\.png' is 40x30 = 1,200 pixels, more than the 1,000"):
            vlm.encode_document([small])
        assert vlm.encode_document([Image.new("RGB", (40, 30))]).shape == (1, 4, 64)  # in memory: only downscaled
    finally:
        del vlm.max_image_pixels
    # A JPEG counts the pixels it decodes at libjpeg's reduced scale: 800x800 decodes at 400x400 for 256 px.
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (800, 800), (200, 30, 30)).save(photo, quality=80)
    assert load_image(photo, max_side=256, max_pixels=200_000).size == (256, 256)
    Image.new("RGB", (800, 800), (200, 30, 30)).save(tmp_path / "photo.png")
    with pytest.raises(TooLargeError, match="800x800"):
        load_image(tmp_path / "photo.png", max_side=256, max_pixels=200_000)


# ---------------------------------------------------------------------------------- 7. metadata
@pytest.mark.parametrize("metadata", ["[1,2]", "5", "NaN", '{"a": NaN}', '{"a": [Infinity]}', '"text"', "{bad", "[" * 5000])
def test_bad_upload_metadata_is_4xx_and_writes_nothing(vlm, tmp_path, metadata):
    client = TestClient(create_app(build_service(vlm, tmp_path)))
    response = client.post("/items/upload", data={"id": "red", "metadata": metadata},
                           files={"image": ("red.png", png_bytes((220, 10, 10)), "image/png")})
    assert response.status_code == 400 and "metadata" in response.json()["detail"], response.text
    assert not (tmp_path / "media").exists() or list((tmp_path / "media").iterdir()) == []
    assert client.get("/stats").json()["count"] == len(DOCUMENTS)


def test_a_failed_add_leaves_no_media_file(vlm, tmp_path, monkeypatch):
    service = build_service(vlm, tmp_path)
    client = TestClient(create_app(service))

    def refuse(*args, **kwargs):
        raise ValueError("the index refused the add")

    monkeypatch.setattr(service.index, "add", refuse)
    response = client.post("/items/upload", data={"id": "red"}, files={"image": ("red.png", png_bytes((220, 10, 10)), "image/png")})
    assert response.status_code == 400 and list((tmp_path / "media").glob("*")) == []


def test_json_items_with_nan_metadata_are_refused(text_model, tmp_path):
    client = text_client(text_model, tmp_path)
    body = b'{"items": [{"id": "z", "text": "zip", "metadata": {"score": NaN}}]}'
    response = client.post("/items", content=body, headers={"content-type": "application/json", **WITH_KEY})
    assert response.status_code == 422 and "JSON cannot carry" in response.text
    assert client.post("/search", json={"query": "zip"}).status_code == 200


# ---------------------------------------------------------------------------------- 8. headers and error bodies
def test_hardening_headers_and_the_page_policy(text_model, tmp_path):
    client = text_client(text_model, tmp_path)
    page = client.get("/")
    script = re.search(r"<script>(.*?)</script>", page.text, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = page.headers["content-security-policy"]
    assert f"script-src 'sha256-{digest}'" in policy and "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "style=" not in page.text  # inline style attributes would need 'unsafe-inline'
    answers = [page, client.get("/health"), client.post("/search", json={"query": "x"}), client.get("/nowhere"),
               client.post("/items", json={"items": []}), client.post("/search", json={"query": ""})]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_the_key_is_compared_in_constant_time(text_model, tmp_path, monkeypatch):
    import hmac

    compared = []
    original = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or original(a, b))
    client = text_client(text_model, tmp_path)
    assert client.post("/items/delete", json={"ids": ["vim"]}, headers={"X-API-Key": "guess"}).status_code == 401
    assert client.post("/items/delete", json={"ids": ["vim"]}, headers=WITH_KEY).status_code == 200
    assert (b"guess", KEY.encode()) in compared and (KEY.encode(), KEY.encode()) in compared


def test_error_bodies_do_not_echo_the_request(text_model, tmp_path):
    client = text_client(text_model, tmp_path)
    for payload in ({"query": ["x" * 100_000]}, {"query": "x", "budget": "y" * 100_000}, {"query": "q", "top_k": "z" * 100_000}):
        response = client.post("/search", json=payload)
        assert response.status_code in (400, 422) and len(response.content) < 2000, response.text[:300]
        assert "x" * 100 not in response.text and "y" * 100 not in response.text and "z" * 100 not in response.text
    invalid = client.post("/search", json={"query": 5}).json()["detail"]
    assert invalid == [{"loc": ["body", "query"], "msg": "Input should be a valid string", "type": "string_type"}]


def test_error_bodies_carry_no_reprs_or_server_paths(vlm, tmp_path):
    service = build_service(vlm, tmp_path)
    client = TestClient(create_app(service))
    corrupt = client.post("/search/upload", files={"image": ("bad.png", b"not a png at all", "image/png")})
    assert corrupt.status_code == 400 and "bad.png" in corrupt.text
    assert " at 0x" not in corrupt.text and "BytesIO" not in corrupt.text
    added = client.post("/items/upload", data={"id": "red"}, files={"image": ("red.png", png_bytes((220, 10, 10)), "image/png")})
    assert added.status_code == 200, added.text
    for file in (tmp_path / "media").iterdir():
        file.write_bytes(b"damaged")
    damaged = client.get("/items/red/image")
    assert damaged.status_code == 404 and str(tmp_path) not in damaged.text and "red" in damaged.text
    # Thumbnails outside the served folders stay refused, without saying where they are.
    service.index.add(["escape"], vlm.encode_document(["x"]), metadata=[{"image": str(tmp_path.parent / "secret.png")}])
    escaped = client.get("/items/escape/image")
    assert escaped.status_code == 403 and str(tmp_path) not in escaped.text


def test_scrub_removes_paths_and_reprs():
    from metaembed.serve.errors import path_pattern, scrub, server_roots

    paths = path_pattern(server_roots(["/srv/metaembed/index"]))
    text = "cannot identify image file <_io.BytesIO object at 0x7f3a2c> in /srv/metaembed/index/media/ab.png or /home/u/x.png"
    assert scrub(text, paths) == "cannot identify image file <object> in ab.png or x.png"
    assert scrub("send images to /items/upload", paths) == "send images to /items/upload"
    assert scrub("budget " + "y" * 10_000, paths) == "budget " + "y" * 60 + "…"
    assert len(scrub("word " * 1000, paths)) == 400


def test_the_limits_are_serve_options(text_model, tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    import metaembed.serve
    from metaembed.cli import app

    build_service(text_model, tmp_path)  # writes tmp_path/index
    settings = []
    monkeypatch.setattr(metaembed.MetaEmbed, "from_pretrained", classmethod(lambda cls, path: text_model))
    monkeypatch.setattr(metaembed.serve, "create_app", lambda service: settings.append(service.settings) or "app")
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    result = CliRunner().invoke(app, ["serve", "--index", str(tmp_path / "index"), "--model", "m", "--max-body-mb", "2",
                                      "--max-query-chars", "500", "--max-image-pixels", "1000000"])
    try:
        assert result.exit_code == 0, result.output
        assert (settings[0].body_limit, settings[0].max_query_chars, settings[0].max_image_pixels) == (2 * 1024 * 1024, 500, 10**6)
        assert text_model.max_image_pixels == 10**6
    finally:
        text_model.__dict__.pop("max_image_pixels", None)

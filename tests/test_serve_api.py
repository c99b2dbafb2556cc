"""The HTTP API over a real model and a real on-disk index: search, add, delete, stats, errors, concurrency."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from metaembed import MetaEmbed, MultiVectorIndex
from metaembed.serve import SearchService, ServiceSettings, create_app

DOCUMENTS = {
    "gzip": "gzip reduces the size of files using Lempel-Ziv coding",
    "vim": "vim is a highly configurable text editor for the terminal",
    "libc": "the GNU C library with the system calls of a Linux system",
    "json": "a fast library for parsing json documents",
}
KEY = "s3cret"


def build_service(model: MetaEmbed, folder, **settings) -> SearchService:
    index = MultiVectorIndex.create(folder / "index", dim=model.embedding_dim, max_document_vectors=model.num_document_meta_tokens)
    ids = list(DOCUMENTS)
    vectors = model.encode_document([DOCUMENTS[i] for i in ids])
    index.add(ids, vectors, metadata=[{"text": DOCUMENTS[i], "title": i} for i in ids])
    return SearchService(model, index, ServiceSettings(media_dir=folder / "media", **settings))


@pytest.fixture(scope="module")
def text_model(minilm_path) -> MetaEmbed:
    return MetaEmbed.from_backbone(minilm_path, 4, 8, device="cpu")


@pytest.fixture()
def client(text_model, tmp_path) -> TestClient:
    return TestClient(create_app(build_service(text_model, tmp_path, api_key=KEY)))


def test_health_stats_and_page(client):
    assert client.get("/health").json() == {"status": "ok"}
    stats = client.get("/stats").json()
    assert stats["count"] == 4 and stats["stored_document_budget"] == 8 and stats["dim"] == 384
    assert [b["budget"] for b in stats["budgets"]] == [[1, 1], [2, 4], [4, 8]]
    assert [b["bytes_per_document"] for b in stats["budgets"]] == [384 * 2, 4 * 384 * 2, 8 * 384 * 2]
    assert stats["model"]["embedding_dim"] == 384 and stats["model"]["trained_budgets"] is None  # an untrained model
    assert (stats["model"]["query_meta_tokens"], stats["model"]["document_meta_tokens"]) == (4, 8)
    assert stats["model"]["backbone"].endswith("model") and stats["index_model"] is None  # built by hand: none recorded
    page = client.get("/")
    assert page.status_code == 200 and 'id="budget"' in page.text
    assert "/search" in client.get("/openapi.json").json()["paths"]


def test_search_returns_ranked_hits_with_metadata_and_cost(client, text_model):
    response = client.post("/search", json={"query": DOCUMENTS["vim"], "budget": "4,8", "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["budget"] == [4, 8] and len(body["results"]) == 3
    top = body["results"][0]
    assert top["id"] == "vim" and top["metadata"] == {"text": DOCUMENTS["vim"], "title": "vim"}
    scores = [hit["score"] for hit in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert body["cost"]["bytes_per_document"] == 8 * 384 * 2 and body["cost"]["total_ms"] > 0
    # The score is the model's MaxSim at that budget.
    import metaembed

    expected = metaembed.maxsim(text_model.encode_query([DOCUMENTS["vim"]], budget=4),
                                text_model.encode_document([DOCUMENTS["vim"]], budget=8))
    assert top["score"] == pytest.approx(float(expected), abs=0.05)  # bf16 index


def test_small_budget_changes_scores(client):
    small = client.post("/search", json={"query": "text editor", "budget": [1, 1]}).json()
    large = client.post("/search", json={"query": "text editor", "budget": [4, 8]}).json()
    assert small["cost"]["bytes_per_document"] * 8 == large["cost"]["bytes_per_document"]
    assert small["results"][0]["score"] != large["results"][0]["score"]


def test_auto_budget_returns_the_budget_used(client):
    body = client.post("/search", json={"query": DOCUMENTS["vim"], "budget": "auto", "top_k": 3}).json()
    assert body["requested_budget"] == "auto" and body["max_budget"] == [4, 8]
    assert body["budget"] in ([1, 1], [2, 4], [4, 8]) and len(body["results"]) == 3
    assert body["results"][0]["id"] == "vim"
    assert body["cost"]["bytes_per_document"] == body["budget"][1] * 384 * 2 and body["cost"]["dot_products"] >= 4
    low = client.post("/search", json={"query": "text editor", "budget": "auto", "max_budget": [1, 1]}).json()
    assert low["budget"] == [1, 1] and low["max_budget"] == [1, 1]
    assert low["cost"] | {"encode_ms": 0, "search_ms": 0, "total_ms": 0} == {
        "bytes_per_document": 768, "index_bytes_read": 4 * 768, "dot_products": 4, "encode_ms": 0, "search_ms": 0, "total_ms": 0}
    fixed = client.post("/search", json={"query": "text editor", "budget": "2,4"}).json()
    assert fixed["requested_budget"] == [2, 4] and fixed["cost"]["dot_products"] == 4 * 2 * 4 and "max_budget" not in fixed
    upload = client.post("/search/upload", data={"query": "text editor", "budget": "auto", "max_budget": "2,4"})
    assert upload.status_code == 200 and upload.json()["budget"] in ([1, 1], [2, 4])
    auto = client.get("/stats").json()["auto"]
    assert auto == {"max_budget": [4, 8], "margin": 0.09, "candidates": 100, "calibrated": False}
    assert 'value = "auto"' in client.get("/").text


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"query": "x", "budget": "auto", "max_budget": "4,9"}, "max_budget r_c=9 exceeds the 8 vectors stored per document"),
        ({"query": "x", "budget": "auto", "max_budget": "5,8"}, "max_budget r_q=5 exceeds the model's 4 query meta tokens"),
        ({"query": "x", "budget": "2,4", "max_budget": "4,8"}, "max_budget applies only to budget 'auto'"),
        ({"query": "x", "budget": "fast"}, "or 'auto'"),
        ({"query": "x", "budget": "5,8"}, "r_q=5 exceeds the model's 4 query meta tokens"),
        ({"query": "x", "budget": "4,9"}, "r_c=9 exceeds the 8 vectors stored per document"),
        ({"query": "x", "budget": "0,1"}, "at least 1"),
        ({"query": "x", "budget": "four"}, "not of the form"),
        ({"query": "   "}, "the query is empty"),
        ({"query": "x", "top_k": 0}, "top_k must be between 1 and 100"),
    ],
)
def test_bad_search_requests_are_400(client, payload, message):
    response = client.post("/search", json=payload)
    assert response.status_code == 400 and message in response.json()["detail"]


def test_write_endpoints_need_the_key(client):
    new = {"items": [{"id": "zip", "text": "zip packages files into compressed archives"}]}
    assert client.post("/items", json=new).status_code == 401
    assert client.post("/items", json=new, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/items/delete", json={"ids": ["vim"]}).status_code == 401
    added = client.post("/items", json=new, headers={"X-API-Key": KEY})
    assert added.status_code == 200 and added.json() == {"added": ["zip"]}
    assert client.get("/stats").json()["count"] == 5
    hit = client.post("/search", json={"query": "zip packages files into compressed archives", "top_k": 1}).json()
    assert hit["results"][0]["id"] == "zip"


def test_delete_and_unknown_id(client):
    headers = {"X-API-Key": KEY}
    assert client.post("/items/delete", json={"ids": ["vim"]}, headers=headers).json() == {"deleted": ["vim"]}
    assert client.get("/stats").json()["count"] == 3
    ids = [hit["id"] for hit in client.post("/search", json={"query": "text editor", "top_k": 3}).json()["results"]]
    assert "vim" not in ids
    missing = client.post("/items/delete", json={"ids": ["vim"]}, headers=headers)
    assert missing.status_code == 404 and "vim" in missing.json()["detail"]


def test_concurrent_clients_get_the_serial_answers(client):
    queries = ["text editor", "compress files", "c library", "parse json"] * 4
    serial = [client.post("/search", json={"query": q, "budget": "2,4"}).json()["results"] for q in queries]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda q: client.post("/search", json={"query": q, "budget": "2,4"}).json()["results"], queries))
    assert parallel == serial


@pytest.fixture()
def image_client(tiny_qwen2_vl_path, tmp_path) -> TestClient:
    model = MetaEmbed.from_backbone(tiny_qwen2_vl_path, 2, 4, device="cpu")
    return TestClient(create_app(build_service(model, tmp_path, max_upload_bytes=50_000)))


def png_bytes(color, size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_upload_add_search_and_thumbnail(image_client):
    red = png_bytes((220, 10, 10))
    added = image_client.post("/items/upload", data={"id": "red", "text": "a red square", "metadata": '{"title": "Red"}'},
                              files={"image": ("red.png", red, "image/png")})
    assert added.status_code == 200, added.text
    found = image_client.post("/search/upload", data={"budget": "2,4", "top_k": "5"}, files={"image": ("q.png", red, "image/png")})
    assert found.status_code == 200, found.text
    hits = found.json()["results"]
    assert [hit["id"] for hit in hits][:1] == ["red"] or "red" in [hit["id"] for hit in hits]
    red_hit = next(hit for hit in hits if hit["id"] == "red")
    assert red_hit["metadata"]["title"] == "Red" and red_hit["metadata"]["image"].endswith(".png")
    thumbnail = image_client.get("/items/red/image")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumbnail.content)).size == (40, 30)
    assert image_client.get("/items/gzip/image").status_code == 404  # a text item has no image


def test_thumbnails_of_an_index_built_from_a_beir_corpus_with_relative_image_paths(tiny_qwen2_vl_path, tmp_path,
                                                                                    monkeypatch):
    """A BEIR corpus names its images relative to its own folder: the thumbnail is found there, wherever the server
    runs from, and the corpus folder (recorded in the index) is the folder images may be served from."""
    import json

    from metaembed.cli.serve import _corpus_roots
    from metaembed.index import build_index

    corpus = tmp_path / "beir"
    (corpus / "images").mkdir(parents=True)
    Image.new("RGB", (48, 32), (10, 200, 10)).save(corpus / "images" / "green.png")
    (corpus / "corpus.jsonl").write_text(json.dumps({"_id": "green", "title": "a green card", "image": "images/green.png"}) + "\n")
    model = MetaEmbed.from_backbone(tiny_qwen2_vl_path, 2, 4, device="cpu")
    build_index(model, corpus / "corpus.jsonl", tmp_path / "index", progress=False)
    index = MultiVectorIndex.open(tmp_path / "index")
    assert index.get_metadata("green")["image"] == "images/green.png"  # stored as the corpus names it
    settings = ServiceSettings(allowed_image_roots=_corpus_roots(index))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    client = TestClient(create_app(SearchService(model, index, settings)))
    thumbnail = client.get("/items/green/image")
    assert thumbnail.status_code == 200, thumbnail.text
    assert Image.open(io.BytesIO(thumbnail.content)).size == (48, 32)


def test_corrupt_and_oversized_uploads(image_client):
    corrupt = image_client.post("/search/upload", data={"query": "x"}, files={"image": ("bad.png", b"not a png at all", "image/png")})
    assert corrupt.status_code == 400 and "bad.png" in corrupt.json()["detail"]
    huge = image_client.post("/search/upload", data={"query": "x"}, files={"image": ("big.png", b"\0" * 60_000, "image/png")})
    assert huge.status_code == 413
    # The server keeps serving after bad uploads.
    assert image_client.post("/search", json={"query": "text editor"}).status_code == 200


def test_the_budgets_offered_are_the_models_training_groups(text_model, tmp_path):
    from metaembed.budgets import Budget
    from metaembed.cli.serve import trained_budgets

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    assert trained_budgets(str(model_dir)) is None  # not trained by `metaembed train`: the paper's budgets
    (model_dir / "train_config.yaml").write_text("groups: ['4,8', '1,1', '2,2', '16,64']\n")
    budgets = trained_budgets(str(model_dir))
    assert budgets == [Budget(1, 1), Budget(2, 2), Budget(4, 8), Budget(16, 64)]
    client = TestClient(create_app(build_service(text_model, tmp_path, budgets=budgets)))
    # clipped to the model's 4 query tokens and the 8 stored document vectors
    assert [b["budget"] for b in client.get("/stats").json()["budgets"]] == [[1, 1], [2, 2], [4, 8]]


def test_a_pq_index_is_served_like_any_other(text_model, tmp_path):
    """A compressed index: /stats reports its bytes (an anchor plus codes per vector), search, add and delete work."""
    texts = {f"pkg{i}": f"{thing} for {use}" for i, (thing, use) in enumerate(
        (thing, use) for thing in ("a library", "a daemon", "a command line tool", "fonts", "a game")
        for use in ("images", "sound", "networks", "python", "compilers", "printing", "mail", "maps"))}
    index = MultiVectorIndex.create(tmp_path / "index", dim=384, max_document_vectors=8, dtype="pq")
    index.add(list(texts), text_model.encode_document(list(texts.values())), [{"text": t} for t in texts.values()])
    client = TestClient(create_app(SearchService(text_model, index, ServiceSettings(media_dir=tmp_path / "media",
                                                                                    api_key=KEY))))
    stats = client.get("/stats").json()
    assert stats["dtype"] == "pq" and stats["count"] == 40
    assert [b["bytes_per_document"] for b in stats["budgets"]] == [768 + 48, 768 + 4 * 48, 768 + 8 * 48]
    hit = client.post("/search", json={"query": texts["pkg13"], "budget": "4,8", "top_k": 1}).json()
    assert hit["results"][0]["id"] == "pkg13"
    added = client.post("/items", json={"items": [{"id": "zip", "text": "zip packs files into archives"}]},
                        headers={"X-API-Key": KEY})
    assert added.status_code == 200, added.text
    assert client.post("/search", json={"query": "zip packs files into archives", "top_k": 1}).json()["results"][0]["id"] == "zip"
    assert client.post("/items/delete", json={"ids": ["zip"]}, headers={"X-API-Key": KEY}).json() == {"deleted": ["zip"]}
    assert client.get("/stats").json()["count"] == 40

"""An image query in a real browser: the page uploads a photo, the server encodes it with a vision-language model
(real MobileNetV2 + MiniLM weights), and the hits come back with their thumbnails, the same kind of picture first."""

from __future__ import annotations

import pytest

from metaembed import MetaEmbed, MultiVectorIndex
from metaembed.serve import SearchService, ServiceSettings, create_app
from tests.test_serve_browser import ARTIFACTS, CHROMIUM, browser_page, serving

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test installs it)")
KINDS = ("chelsea", "coffee", "rocket", "astronaut")
"""scikit-image's sample photos (a cat, a cup of coffee, a rocket, an astronaut), shipped in its wheel."""


def photo_variants(kind: str) -> list:
    """Four views of one sample photo: two crops, its mirror image, and (the query) a half-size copy."""
    import skimage.data
    from PIL import Image, ImageOps

    image = Image.fromarray(getattr(skimage.data, kind)()).convert("RGB")
    width, height = image.size
    return [image.crop((0, 0, int(width * 0.8), int(height * 0.8))), ImageOps.mirror(image),
            image.crop((int(width * 0.2), int(height * 0.2), width, height)), image.resize((width // 2, height // 2))]


@pytest.fixture()
def image_server(minilm_path, mobilenet_v2_path, tmp_path, monkeypatch):
    """A server over 12 photos (three views of each kind), with an untrained MetaEmbed over the composed VLM: its
    mean first vector already ranks views of one photo together (checked against the model in the test)."""
    monkeypatch.setenv("METAEMBED_CACHE", str(tmp_path / "cache"))  # the composed backbone is written here
    model = MetaEmbed.from_backbone(minilm_path, 2, 4, vision_tower=mobilenet_v2_path, first_vector="auto",
                                    meta_residual=None, device="cpu")
    photos = tmp_path / "photos"
    photos.mkdir()
    ids, paths = [], []
    for kind in KINDS:
        for number, view in enumerate(photo_variants(kind)[:3]):
            path = photos / f"{kind}-{number}.png"
            view.save(path)
            ids.append(path.stem)
            paths.append(path)
    index = MultiVectorIndex.create(tmp_path / "index", dim=model.embedding_dim,
                                    max_document_vectors=model.num_document_meta_tokens)
    index.add(ids, model.encode_document([str(path) for path in paths]),
              metadata=[{"image": str(path), "title": path.stem} for path in paths])
    query = tmp_path / "query-chelsea.png"
    photo_variants("chelsea")[3].save(query)
    service = SearchService(model, index, ServiceSettings(media_dir=tmp_path / "media", allowed_image_roots=[photos]))
    with serving(create_app(service)) as url:
        yield url, query, model, index


def test_image_query_in_the_browser(image_server):
    from playwright.sync_api import expect

    url, query, model, index = image_server
    expected = index.search(model.encode_query([str(query)]), k=4, budget=(2, 4))[0].ids
    assert all(hit.startswith("chelsea-") for hit in expected[:3])  # the model itself ranks the cat's views first
    with browser_page(height=900) as page:
        page.goto(url + "/")
        page.wait_for_selector("#budget option", state="attached")
        page.fill("#top-k", "4")
        page.set_input_files("#image", str(query))
        page.select_option("#budget", "2,4")  # with an image chosen, changing the budget searches
        page.click("#go")
        hits = page.locator("li.hit")
        expect(hits).to_have_count(4)
        expect(page.locator("#cost-budget")).to_have_text("(2, 4)")
        found = [hits.nth(i).get_attribute("data-id") for i in range(hits.count())]
        assert found == expected  # the page shows the server's ranking: the cat's three views, then another kind
        assert all(hit.startswith("chelsea-") for hit in found[:3]) and not found[3].startswith("chelsea-")
        assert page.locator("#query-preview").is_visible()  # the chosen image is shown beside the box
        thumbnail = page.locator("li.hit img").first
        assert thumbnail.get_attribute("src") == f"/items/{found[0]}/image"
        answer = page.request.get(url + thumbnail.get_attribute("src"))
        assert answer.status == 200 and answer.headers["content-type"] == "image/jpeg"
        assert thumbnail.bounding_box()["width"] > 0
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web_image_search.png"), full_page=True)

        page.click("#clear-image")  # back to text: the image and its preview are gone
        assert not page.locator("#query-preview").is_visible()
        page.fill("#query", "a cat")
        with page.expect_request("**/search/upload") as sent:
            page.click("#go")
        form = sent.value.post_data_buffer
        assert b'name="query"' in form and b'name="image"' not in form
        expect(hits).to_have_count(4)
    assert (ARTIFACTS / "web_image_search.png").stat().st_size > 10_000

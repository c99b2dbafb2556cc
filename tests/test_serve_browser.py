"""The web page in a real browser (Debian's headless Chromium driven by Playwright) against a live server."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from metaembed import MetaEmbed
from metaembed.serve import create_app
from tests.test_serve_api import DOCUMENTS, build_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test installs it)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(app) -> Iterator[str]:
    """The app served by uvicorn in a thread on a free loopback port; yields its URL and stops it afterwards."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def browser_page(height: int = 800):
    """A page of Debian's headless Chromium, driven by Playwright; closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1100, "height": height})
        finally:
            browser.close()


@pytest.fixture()
def server_url(minilm_path, tmp_path):
    model = MetaEmbed.from_backbone(minilm_path, 4, 8, device="cpu")
    with serving(create_app(build_service(model, tmp_path))) as url:
        yield url


def test_search_then_change_budget_in_the_browser(server_url, tmp_path):
    from playwright.sync_api import expect

    with browser_page() as page:
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(server_url + "/")
        page.wait_for_selector("#budget option", state="attached")
        assert page.locator("#budget option").all_inner_texts()[0].startswith("(1, 1)")
        assert not page.locator("#image").is_visible()  # a text-only model: no image picker
        page.fill("#query", DOCUMENTS["vim"])  # the untrained model still finds an exact copy
        page.select_option("#budget", "4,8")
        page.click("#go")
        page.wait_for_selector("li.hit")
        first_at_large = page.locator("li.hit").first
        assert first_at_large.get_attribute("data-id") == "vim"
        large_scores = page.locator("li.hit .score").all_inner_texts()
        assert page.inner_text("#cost-budget") == "(4, 8)"
        assert page.inner_text("#cost-bytes") == "6.0 KiB"
        assert "ms" in page.inner_text("#cost-latency")

        page.select_option("#budget", "1,1")  # changing the budget searches again
        # (a locator wait: the page's Content-Security-Policy forbids the eval behind wait_for_function)
        expect(page.locator("#cost-budget")).to_have_text("(1, 1)")
        assert page.inner_text("#cost-bytes") == "768 B"
        small_scores = page.locator("li.hit .score").all_inner_texts()
        assert small_scores != large_scores
        assert len(small_scores) == 4 and "vim" in page.inner_text("#results")
        assert not [text for text in console if "Content Security Policy" in text], console  # script and style allowed
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web_search.png"), full_page=True)
    assert (ARTIFACTS / "web_search.png").stat().st_size > 10_000

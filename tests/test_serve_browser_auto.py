"""The web page's "auto" budget in a real browser: the option is offered and the page shows the budget the query used."""

from __future__ import annotations

import pytest

from tests.test_serve_api import DOCUMENTS
from tests.test_serve_browser import CHROMIUM, browser_page, server_url  # noqa: F401  (server_url is a fixture)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test installs it)")


def test_auto_budget_in_the_browser(server_url):  # noqa: F811
    with browser_page() as page:
        page.goto(server_url + "/")
        page.wait_for_selector("#budget option[value=auto]", state="attached")
        assert page.inner_text("#budget option[value=auto]").startswith("auto — (1, 1) first, up to (4, 8)")
        page.fill("#query", DOCUMENTS["vim"])
        page.select_option("#budget", "auto")
        page.click("#go")
        page.wait_for_selector("#cost-auto")
        assert page.inner_text("#cost-auto") == "(auto, up to (4, 8))"
        assert page.inner_text("#cost-budget") in ("(1, 1)", "(2, 4)", "(4, 8)")
        assert "dot products" in page.inner_text("#cost")
        assert page.locator("li.hit").first.get_attribute("data-id") == "vim"

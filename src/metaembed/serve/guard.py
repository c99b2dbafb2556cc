"""What every request passes before the app sees it: the write key, the body size cap, hardening headers.

A plain ASGI middleware, so that nothing of a refused request's body is read: the key of a write route is
checked (in constant time) from the headers alone, a declared ``Content-Length`` over the cap is answered
413 at once, and a body streamed without one is counted as it arrives and cut off at the cap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_POLICY = "default-src 'none'; frame-ancestors 'none'"
"""The Content-Security-Policy of JSON and image answers: they load nothing and may not be framed."""
DOCS_POLICY = "frame-ancestors 'none'"
"""/docs and /redoc load FastAPI's Swagger UI / ReDoc from a CDN: only framing is refused there."""
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
HARDENING_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                     (b"referrer-policy", b"no-referrer"))


def key_matches(given: str | bytes | None, expected: str) -> bool:
    """Whether a presented API key equals the expected one, compared in constant time."""
    if given is None:
        return False
    raw = given if isinstance(given, bytes) else given.encode("latin-1", "replace")
    return hmac.compare_digest(raw, expected.encode("utf-8"))


def inline_hash(source: str) -> str:
    """A CSP source expression allowing exactly this inline script or style."""
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def page_policy(html: str) -> str:
    """The web page's Content-Security-Policy: its own inline script and style (by hash), same-origin fetches
    and images, nothing else, never framed."""
    scripts = " ".join(inline_hash(body) for body in re.findall(r"<script>(.*?)</script>", html, re.S)) or "'none'"
    styles = " ".join(inline_hash(body) for body in re.findall(r"<style>(.*?)</style>", html, re.S)) or "'none'"
    return (f"default-src 'none'; script-src {scripts}; style-src {styles}; img-src 'self' blob: data:; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once a streamed body passes the cap."""


async def reply(send: Send, status: int, detail: str) -> None:
    """Answer with a small JSON error and close the connection (the unread body is not waited for)."""
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: key first, then the body cap, on every route; hardening headers on every answer.

    ``protected`` holds the (method, path) pairs that need ``X-API-Key`` when ``api_key`` is set;
    ``route_limits`` maps (method, path) pairs to a smaller body cap and the setting behind it (a query route's
    body cannot need more than its longest query); ``policies`` maps exact paths to their
    Content-Security-Policy (others get :data:`API_POLICY`).
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, api_key: str | None = None,
                 protected: Iterable[tuple[str, str]] = (), policies: dict[str, str] | None = None,
                 route_limits: dict[tuple[str, str], tuple[int, str]] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.route_limits = {route: (limit, setting) for route, (limit, setting) in (route_limits or {}).items()
                             if limit < max_body_bytes}
        self.api_key = api_key
        self.protected = frozenset(protected)
        self.policies = {**{path: DOCS_POLICY for path in DOCS_PATHS}, **(policies or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a write without the key, then a declared body over the cap, then run the app with the cap."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._hardened(scope, send)
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and (scope["method"], scope["path"]) in self.protected \
                and not key_matches(headers.get(b"x-api-key"), self.api_key):
            await reply(send, 401, "this endpoint needs a valid X-API-Key header")
            return
        limit, setting = self.route_limits.get((scope["method"], scope["path"]), (self.max_body_bytes, "--max-body-mb"))
        too_large = (f"the request body is larger than this route's limit of {limit:,} bytes "
                     f"(the {setting} setting)")
        refusal = self._length_refusal(headers.get(b"content-length"), limit, too_large)
        if refusal is not None:
            await reply(send, *refusal)
            return
        await self._capped(scope, receive, send, limit, too_large)

    @staticmethod
    def _length_refusal(declared: bytes | None, limit: int, too_large: str) -> tuple[int, str] | None:
        """A (status, detail) answer for a bad or too large declared Content-Length, else None."""
        if declared is None:
            return None
        if not declared.isdigit():
            return 400, "the Content-Length header is not a number"
        if int(declared) > limit:
            return 413, too_large
        return None

    async def _capped(self, scope: Scope, receive: Receive, send: Send, limit: int, too_large: str) -> None:
        """Run the app with ``receive`` counting body bytes; past ``limit``, whatever the app answers becomes a 413."""
        state = {"received": 0, "too_large": False, "started": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["too_large"] = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            if state["too_large"]:  # the app's answer to a body cut off at the cap
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await reply(send, 413, too_large)
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["too_large"]:
                raise
            if not state["started"]:
                await reply(send, 413, too_large)

    def _hardened(self, scope: Scope, send: Send) -> Send:
        """``send`` adding the hardening headers and the path's Content-Security-Policy to every answer."""
        policy = self.policies.get(scope["path"], API_POLICY).encode("ascii")

        async def hardened_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                extra = [*HARDENING_HEADERS, (b"content-security-policy", policy)]
                headers.extend((name, value) for name, value in extra if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        return hardened_send

"""The HTTP API (FastAPI, OpenAPI docs at /docs) and the web page at /.

Public: the page, ``/health``, ``/stats``, ``/search``, ``/search/upload`` and thumbnails. Writes (``/items``,
``/items/upload``, ``/items/delete``) need ``X-API-Key`` when the server has a key. Every request first passes
:class:`~metaembed.serve.guard.RequestGuard` (key, body cap, hardening headers); model and index work runs in
worker threads, never on the event loop.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from PIL import Image
from pydantic import BaseModel, Field, field_validator

from metaembed.inputs import InvalidInputError, load_image
from metaembed.serve.errors import install_error_handlers
from metaembed.serve.guard import RequestGuard, key_matches, page_policy
from metaembed.serve.service import SearchService
from metaembed.serve.uploads import ImageDecoder, check_finite, parse_metadata, read_upload


class SearchRequest(BaseModel):
    query: str = Field(..., description="Query text (at most the server's max_query_chars; longer gets 413).")
    budget: str | list[int] | None = Field(
        None, description="(r_q, r_c) as '4,8' or [4, 8]; or 'auto': (1,1) first, more only where the top two are close; "
                          "default: the largest.")
    max_budget: str | list[int] | None = Field(None, description="With budget 'auto': the largest budget to climb to.")
    top_k: int = Field(10, description="How many results.")


class ItemIn(BaseModel):
    id: str
    text: str | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _finite(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """Metadata must survive being sent back as JSON: no NaN or infinities."""
        return check_finite(value)


class AddRequest(BaseModel):
    items: list[ItemIn]


class DeleteRequest(BaseModel):
    ids: list[str]


def page_html() -> str:
    """The search page's HTML."""
    return resources.files("metaembed.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(service: SearchService) -> FastAPI:
    """Build the app around one loaded service (model loaded once, shared by every request)."""
    settings = service.settings
    decoder = ImageDecoder(settings.max_concurrent_decodes, settings.max_waiting_decodes)
    accepts_images = bool(service.model.accepts_images)
    html = page_html()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        """Stop the decoder threads when the server stops."""
        yield
        decoder.close()

    app = FastAPI(title="MetaEmbed search", description="Multimodal retrieval at a budget chosen per query.",
                  lifespan=lifespan)
    install_error_handlers(app, [settings.media_dir, getattr(service.index, "path", None), *settings.allowed_image_roots])

    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        """Writes need the server's key (also checked, before any body is read, by the guard)."""
        if settings.api_key is not None and not key_matches(x_api_key, settings.api_key):
            raise HTTPException(status_code=401, detail="this endpoint needs a valid X-API-Key header")

    async def upload_image(upload: UploadFile) -> tuple[Image.Image, bytes]:
        """An uploaded image after the cheap checks, decoded off the event loop."""
        return await read_upload(upload, accepts_images=accepts_images, max_bytes=settings.max_upload_bytes,
                                 max_pixels=settings.max_image_pixels, decoder=decoder)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        """The search page."""
        return html

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: answered on the event loop, without waiting for the model, the index or a worker thread."""
        return {"status": "ok"}

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        """Item count, vector size and type, the model serving and the one that built the index, and each offered
        budget's bytes per document."""
        return service.stats()

    @app.post("/search")
    def search(request: SearchRequest) -> dict[str, Any]:
        """Search with a text query at a budget (public)."""
        service.check_query(request.query)
        budget = service.parse_budget(request.budget)
        max_budget = service.parse_max_budget(request.max_budget, budget)
        return service.search(request.query, None, budget, service.check_top_k(request.top_k), max_budget)

    @app.post("/search/upload")
    async def search_upload(
        query: Annotated[str | None, Form()] = None,
        budget: Annotated[str | None, Form()] = None,
        top_k: Annotated[int, Form()] = 10,
        image: Annotated[UploadFile | None, File()] = None,
        max_budget: Annotated[str | None, Form()] = None,
    ) -> dict[str, Any]:
        """Search with a text and/or an uploaded image (multipart; public)."""
        service.check_query(query)
        parsed_budget = service.parse_budget(budget)
        parsed_max = service.parse_max_budget(max_budget, parsed_budget)
        service.check_top_k(top_k)
        picture = (await upload_image(image))[0] if image is not None and image.filename else None
        return await run_in_threadpool(service.search, query, picture, parsed_budget, top_k, parsed_max)

    @app.post("/items", dependencies=[Depends(require_key)])
    def add_items(request: AddRequest) -> dict[str, Any]:
        """Add (or replace) text items; needs X-API-Key when the server has a key."""
        records = [{"id": item.id, "text": item.text, "metadata": item.metadata} for item in request.items]
        if any(record["text"] is None for record in records):
            raise HTTPException(status_code=400, detail="every item needs a text here; send images to /items/upload")
        return {"added": service.add(records)}

    @app.post("/items/upload", dependencies=[Depends(require_key)])
    async def add_image_item(
        id: Annotated[str, Form()],
        image: Annotated[UploadFile, File()],
        text: Annotated[str | None, Form()] = None,
        metadata: Annotated[str | None, Form(description="JSON object")] = None,
    ) -> dict[str, Any]:
        """Add (or replace) one item with an image (multipart); needs X-API-Key when the server has a key."""
        meta = check_finite(parse_metadata(metadata))
        picture, raw = await upload_image(image)
        record = {"id": id, "text": text or None, "metadata": meta}
        return {"added": await run_in_threadpool(service.add_upload, record, picture, raw)}

    @app.post("/items/delete", dependencies=[Depends(require_key)])
    def delete_items(request: DeleteRequest) -> dict[str, Any]:
        """Delete items by id; needs X-API-Key when the server has a key."""
        try:
            return {"deleted": service.delete(request.ids)}
        except KeyError as error:
            raise HTTPException(status_code=404, detail=f"unknown id(s): {error.args[0] if error.args else error}") from None

    @app.get("/items/{item_id}/image")
    def item_image(item_id: str, size: int = 256) -> Response:
        """A JPEG thumbnail (longer side ``size``, 16 to 1024) of an item's image (public)."""
        return Response(content=thumbnail_jpeg(service, item_id, size), media_type="image/jpeg")

    protected = {(method, route.path) for route in app.routes if isinstance(route, APIRoute)
                 and any(dependency.call is require_key for dependency in route.dependant.dependencies)
                 for method in route.methods}
    app.add_middleware(RequestGuard, max_body_bytes=settings.body_limit, api_key=settings.api_key,
                       protected=protected, policies={"/": page_policy(html)},
                       route_limits={("POST", "/search"): (search_body_limit(settings.max_query_chars), "--max-query-chars")})
    return app


def search_body_limit(max_query_chars: int) -> int:
    """The largest JSON body a ``/search`` can need: the longest query with every character escaped
    (``\\ud83d\\ude00``, 12 bytes), plus room for the other fields."""
    return 12 * max_query_chars + 4096


def thumbnail_jpeg(service: SearchService, item_id: str, size: int) -> bytes:
    """A JPEG thumbnail of an item's image; 404 for no image or an unreadable one, 403 outside the served folders."""
    try:
        path = service.image_path_of(item_id)
    except KeyError:
        raise HTTPException(status_code=404, detail=f"no image for id {item_id!r}") from None
    except PermissionError as error:
        raise HTTPException(status_code=403, detail=str(error)) from None
    try:
        thumbnail = load_image(path, max_side=max(16, min(size, 1024)), max_pixels=service.settings.max_image_pixels,
                               name=item_id)
    except InvalidInputError:
        raise HTTPException(status_code=404, detail=f"the image of id {item_id!r} cannot be read") from None
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()

"""The HTTP API (FastAPI, OpenAPI docs at /docs) and the web page at /."""

from __future__ import annotations

import io
import json
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, Field

from metaembed.inputs import InvalidInputError, load_image
from metaembed.serve.service import SearchService


class SearchRequest(BaseModel):
    query: str = Field(..., description="Query text.")
    budget: str | list[int] | None = Field(
        None, description="(r_q, r_c) as '4,8' or [4, 8]; or 'auto': (1,1) first, more only where the top two are close; "
                          "default: the largest.")
    max_budget: str | list[int] | None = Field(None, description="With budget 'auto': the largest budget to climb to.")
    top_k: int = Field(10, description="How many results.")


class ItemIn(BaseModel):
    id: str
    text: str | None = None
    metadata: dict[str, Any] | None = None


class AddRequest(BaseModel):
    items: list[ItemIn]


class DeleteRequest(BaseModel):
    ids: list[str]


def create_app(service: SearchService) -> FastAPI:
    """Build the app around one loaded service (model loaded once, shared by every request)."""
    app = FastAPI(title="MetaEmbed search", description="Multimodal retrieval at a budget chosen per query.")
    settings = service.settings

    @app.exception_handler(InvalidInputError)
    async def invalid_input(_: Request, error: InvalidInputError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(error)})

    @app.exception_handler(ValueError)
    async def invalid_value(_: Request, error: ValueError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(error)})

    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if settings.api_key is not None and x_api_key != settings.api_key:
            raise HTTPException(status_code=401, detail="this endpoint needs a valid X-API-Key header")

    async def read_image(upload: UploadFile) -> tuple[Image.Image, bytes]:
        raw = await upload.read(settings.max_upload_bytes + 1)
        if len(raw) > settings.max_upload_bytes:
            raise HTTPException(status_code=413, detail=f"image {upload.filename!r} is larger than {settings.max_upload_bytes} bytes")
        if not raw:
            raise HTTPException(status_code=400, detail=f"image {upload.filename!r} is empty")
        try:
            image = load_image(Image.open(io.BytesIO(raw)))
        except InvalidInputError as error:
            raise HTTPException(status_code=400, detail=f"upload {upload.filename!r}: {error}") from None
        except Exception as error:  # PIL raises several types for undecodable bytes
            raise HTTPException(status_code=400, detail=f"upload {upload.filename!r} is not a readable image: {error}") from None
        return image, raw

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("metaembed.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        return service.stats()

    @app.post("/search")
    def search(request: SearchRequest) -> dict[str, Any]:
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
        parsed_budget = service.parse_budget(budget)
        parsed_max = service.parse_max_budget(max_budget, parsed_budget)
        service.check_top_k(top_k)
        picture = (await read_image(image))[0] if image is not None and image.filename else None
        return service.search(query, picture, parsed_budget, top_k, parsed_max)

    @app.post("/items", dependencies=[Depends(require_key)])
    def add_items(request: AddRequest) -> dict[str, Any]:
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
        picture, raw = await read_image(image)
        try:
            meta = json.loads(metadata) if metadata else {}
        except json.JSONDecodeError as error:
            raise HTTPException(status_code=400, detail=f"metadata is not valid JSON: {error}") from None
        path = service.store_upload(picture, raw)
        record = {"id": id, "text": text or None, "image": picture, "image_path": path, "metadata": meta}
        return {"added": service.add([record])}

    @app.post("/items/delete", dependencies=[Depends(require_key)])
    def delete_items(request: DeleteRequest) -> dict[str, Any]:
        try:
            return {"deleted": service.delete(request.ids)}
        except KeyError as error:
            raise HTTPException(status_code=404, detail=f"unknown id(s): {error.args[0] if error.args else error}") from None

    @app.get("/items/{item_id}/image")
    def item_image(item_id: str, size: int = 256) -> Response:
        try:
            path = service.image_path_of(item_id)
        except KeyError:
            raise HTTPException(status_code=404, detail=f"no image for id {item_id!r}") from None
        except PermissionError as error:
            raise HTTPException(status_code=403, detail=str(error)) from None
        thumbnail = load_image(path, max_side=max(16, min(size, 1024)))
        buffer = io.BytesIO()
        thumbnail.save(buffer, format="JPEG", quality=85)
        return Response(content=buffer.getvalue(), media_type="image/jpeg")

    return app

"""Serving: a FastAPI app (search, add, delete, stats, a web page) over one model and one index."""

from metaembed.serve.app import create_app
from metaembed.serve.service import SearchService, ServiceSettings

__all__ = ["SearchService", "ServiceSettings", "create_app"]

"""The FastAPI service over the ``rag`` library."""

from services.app import create_app

__all__ = ["create_app"]

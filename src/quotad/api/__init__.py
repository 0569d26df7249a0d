"""The HTTP interface: FastAPI routers over the service layer."""

from quotad.api.app import create_app

__all__ = ["create_app"]

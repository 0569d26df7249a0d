"""The HTTP interface: FastAPI routers over the service layer (``quotad.api.app.create_app``).

Nothing is imported here, so the CLI can use ``quotad.api.views`` without loading FastAPI's
whole application machinery.
"""

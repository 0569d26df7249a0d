"""The HTTP interface: FastAPI routers over the service layer (``quotad.api.app.create_app``).

Nothing is imported here. The routes render records with ``quotad.http.views``, which the
CLI's local commands share without importing anything of this package.
"""

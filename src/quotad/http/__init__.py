"""Framework-free HTTP pieces every entry point shares: ASGI types, request ids, the
contract's error bodies and quota headers. Nothing here imports FastAPI or Starlette, so
the ASGI middleware (``quotad.asgi``), the dashboard and the API all stand on it alike."""

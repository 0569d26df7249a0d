"""The HTTP peers quotad's ``POST /v1/verify`` is compared with, each run like quotad is.

    .venv/bin/python bench/peers.py bare --port 8101
    .venv/bin/python bench/peers.py slowapi --port 8102 --redis redis://127.0.0.1:6379/0

Both run exactly as ``quotad serve`` runs quotad (``quotad.api.server.run``: one uvicorn
process, uvloop, httptools, no access log, each answer written in one piece), so the
three differ only in the application.

- ``bare``: a bare ASGI app that reads the request body and answers a small JSON; the
  most a Python server on this machine can answer, a ceiling rather than a competitor.
- ``slowapi``: what a FastAPI team would write: a POST route with a pydantic body,
  guarded by ``slowapi``'s ``Limiter`` on Redis (``1000000000/day`` per account, the
  account taken from the ``X-Bench-Account`` header the load generator sends).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route's annotations
# at runtime, and the slowapi decorator wraps the route.
import argparse
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel

from quotad.api import server

BODY = b'{"valid":true}'


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the body (as any endpoint must), answer ``{"valid":true}``."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(BODY)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


class VerifyIn(BaseModel):
    """The same body quotad's verify takes."""

    key: str
    service: str
    cost: int = 1


def account_of(request: Request) -> str:
    """The rate-limit key: the account the load generator names in a header."""
    return request.headers.get("x-bench-account", "anonymous")


def slowapi_app(redis_url: str, key_prefix: str) -> FastAPI:
    """FastAPI + slowapi, limits kept in Redis."""
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded

    limiter = Limiter(key_func=account_of, storage_uri=redis_url, key_prefix=key_prefix)
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.post("/v1/verify")
    @limiter.limit("1000000000/day")
    async def verify(request: Request, body: VerifyIn) -> dict[str, Any]:
        return {"valid": True, "service": body.service}

    return app


def main() -> None:
    """Serve one peer until killed."""
    parser = argparse.ArgumentParser(description="Serve one HTTP peer of quotad's verify.")
    parser.add_argument("kind", choices=["bare", "slowapi"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--key-prefix", default="bench")
    args = parser.parse_args()
    app: Any = bare_app if args.kind == "bare" else slowapi_app(args.redis, args.key_prefix)
    server.run(app, args.host, args.port)


if __name__ == "__main__":
    main()

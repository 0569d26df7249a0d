"""A stand-in for "any HTTP API", to put ``quotad proxy`` in front of.

    python examples/upstream_api.py --port 9000 &
    quotad proxy --upstream http://127.0.0.1:9000 --service insights --port 8081

Routes: ``/echo/…`` (any method) describes the request it got, reading the body as a
stream; ``/bytes/{n}`` streams ``n`` bytes; ``/status/{code}`` answers that status.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CHUNK = 64 * 1024


async def echo(request: Request) -> Response:
    """The method, path, query, headers and body size/digest this API received."""
    digest, size = hashlib.sha256(), 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": dict(request.headers.items()),
            "body_bytes": size,
            "body_sha256": digest.hexdigest(),
        }
    )


async def stream_bytes(request: Request) -> Response:
    """``n`` bytes, streamed in 64 KiB chunks without being held in memory."""
    total = int(request.path_params["n"])

    async def chunks() -> AsyncIterator[bytes]:
        block = b"q" * CHUNK
        left = total
        while left > 0:
            yield block[: min(left, CHUNK)]
            left -= CHUNK

    return StreamingResponse(
        chunks(), media_type="application/octet-stream", headers={"content-length": str(total)}
    )


async def status(request: Request) -> Response:
    """An answer with the status in the path."""
    code = int(request.path_params["code"])
    return JSONResponse({"status": code}, status_code=code)


app = Starlette(
    routes=[
        Route("/echo{rest:path}", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/bytes/{n:int}", stream_bytes),
        Route("/status/{code:int}", status),
    ]
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a stand-in upstream API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")

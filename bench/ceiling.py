"""The stack's ceiling: Starlette on uvicorn reading, decompressing and parsing each envelope as an
ingest endpoint must, then answering, and storing nothing. The tracker is measured against it."""
from __future__ import annotations

import gzip
import json

import brotli
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def envelope(request: Request) -> JSONResponse:
    body = await request.body()
    encoding = request.headers.get("content-encoding")
    body = gzip.decompress(body) if encoding == "gzip" else brotli.decompress(body) if encoding == "br" else body
    header, _, rest = body.partition(b"\n")
    _, _, rest = rest.partition(b"\n")
    json.loads(rest.split(b"\n", 1)[0])
    return JSONResponse({"id": json.loads(header).get("event_id")})


app = Starlette(routes=[Route("/api/{project_id:int}/envelope/", envelope, methods=["POST"])])

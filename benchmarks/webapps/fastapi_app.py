"""The FastAPI reference app with `GET /native` mounted: `uvicorn benchmarks.webapps.fastapi_app:app`."""

from __future__ import annotations

from adapters.fastapi.app import app
from fastapi.responses import StreamingResponse

from benchmarks.webapps import anative_sse
from callstream.sse import SSE_HEADERS

__all__ = ("app",)


@app.get("/native")
async def native(q: str = "") -> StreamingResponse:
    return StreamingResponse(anative_sse(q), headers=dict(SSE_HEADERS))

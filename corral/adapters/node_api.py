"""Small JSON calls to a node (discovery and health checks) over its connection pool."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from corral.domain.errors import UpstreamError, UpstreamProtocol, UpstreamTimeout
from corral.net.client import ConnectionPool, build_head


async def call(
    pool: ConnectionPool,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    timeout_s: float,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, bytes]:
    """One exchange with a node; returns (status, body). Raises an UpstreamError subclass on failure."""
    conn = await pool.acquire(timeout_s)
    chunks: list[bytes] = []
    hdrs = list(headers or [])
    if body:
        hdrs.append((b"content-type", b"application/json"))
    try:
        async with asyncio.timeout(timeout_s):
            conn.send(
                build_head(
                    method,
                    path.encode(),
                    pool.host_header,
                    hdrs,
                    len(body) if body or method != "GET" else None,
                ),
                body,
            )
            response = await conn.response()
            conn.attach(chunks.append)
            await conn.finished()
    except TimeoutError as exc:
        conn.close()
        raise UpstreamTimeout(f"{method} {path} on node {pool.name} timed out") from exc
    except UpstreamError:
        conn.close()
        raise
    except BaseException:
        conn.close()
        raise
    conn.release()
    return response.status, b"".join(chunks)


async def get_json(pool: ConnectionPool, path: str, timeout_s: float) -> Any:
    status, body = await call(pool, "GET", path, timeout_s=timeout_s)
    if status != 200:
        raise UpstreamProtocol(f"GET {path} on node {pool.name} answered {status}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocol(f"GET {path} on node {pool.name} answered invalid JSON") from exc

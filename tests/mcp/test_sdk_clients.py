"""The official Python MCP SDK against the gateway (SPEC §4), every transport it has, on the
`support` fixture tenant, embedded and shared with Redis: list tools, call both tools (structured
content), schema violations per negotiated version, an unknown tool, resources, prompts, ping.

mcp 2.x: ``Client(url)`` in auto mode (settles on 2026-07-28) and legacy mode (initialize),
``streamable_http_client`` + ``ClientSession``, ``sse_client``. mcp 1.x: ``streamablehttp_client``
and ``sse_client``. The tenant travels as the X-Tenant-ID header, or once as the /t/support/ prefix.
"""

from __future__ import annotations

import pytest

from mcpkit import (
    MODERN, NEWEST, exercise_support, high_level, legacy_sse, only_mcp1, only_mcp2, streamable,
)

pytestmark = pytest.mark.anyio

TENANT = {"X-Tenant-Id": "support"}


async def test_streamable_http_client_session(gw):
    async with streamable(f"{gw.url}/mcp", TENANT) as conn:
        assert conn.version == NEWEST
        await exercise_support(conn)


async def test_streamable_http_on_post_root(gw):
    """`POST /` from an MCP client is the same endpoint as /mcp."""
    async with streamable(f"{gw.url}/", TENANT) as conn:
        await exercise_support(conn)


async def test_streamable_http_tenant_prefix(gw):
    async with streamable(f"{gw.url}/t/support/mcp") as conn:
        await exercise_support(conn)


async def test_legacy_sse_client(gw):
    async with legacy_sse(f"{gw.url}/mcp/sse", TENANT) as conn:
        assert conn.version in ("2024-11-05", "2025-03-26", "2025-06-18", NEWEST)
        await exercise_support(conn)


async def test_legacy_sse_client_tenant_prefix(gw):
    async with legacy_sse(f"{gw.url}/t/support/mcp/sse") as conn:
        await exercise_support(conn)


@only_mcp2
async def test_client_auto_mode_settles_on_stateless_revision(gw):
    async with high_level(f"{gw.url}/mcp", "auto", TENANT) as conn:
        assert conn.version == MODERN
        await exercise_support(conn)


@only_mcp2
async def test_client_legacy_mode_initializes(gw):
    async with high_level(f"{gw.url}/mcp", "legacy", TENANT) as conn:
        assert conn.version == NEWEST
        await exercise_support(conn)


@only_mcp2
async def test_client_from_bare_url_with_tenant_prefix(gw):
    """``Client(url)`` takes no headers: the /t/{tenant}/ prefix carries the tenant."""
    async with high_level(f"{gw.url}/t/support/mcp", "auto") as conn:
        assert conn.version == MODERN
        await exercise_support(conn)
    async with high_level(f"{gw.url}/t/support/mcp", "legacy") as conn:
        assert conn.version == NEWEST
        await exercise_support(conn)


@only_mcp1
async def test_mcp1_offers_and_gets_newest_handshake_version(gw):
    async with streamable(f"{gw.url}/mcp", TENANT) as conn:
        assert conn.version == NEWEST

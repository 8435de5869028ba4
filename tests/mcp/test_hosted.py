"""The hosted MCP endpoint, POST /api/v1/mcp (SPEC §4.5), with the official Python MCP SDK over
its streamable HTTP client: an editor key and X-Tenant-Id, no session, one answer per request,
revision 2025-03-26 (so a schema violation is -32602), tools.listChanged false. Both SDK majors,
embedded and shared with Redis."""

from __future__ import annotations

import json
import uuid

import pytest

from mcpkit import INVOICES, McpError, error_code, is_error, streamable, structured, text_of

pytestmark = pytest.mark.anyio


async def test_the_sdk_client_uses_the_hosted_endpoint(gw, api_factory):
    api = api_factory(gw.url)
    key = api.mint(f"hosted-{uuid.uuid4().hex[:8]}", "agent", "editor")
    hdrs = {"X-API-Key": key, "X-Tenant-Id": "support"}
    async with streamable(f"{gw.url}/api/v1/mcp", hdrs) as conn:
        assert conn.version == "2025-03-26"
        s = conn.session
        names = {t.name for t in (await s.list_tools()).tools}
        assert {"get_invoice_ledger", "get_weather"} <= names
        r = await s.call_tool("get_invoice_ledger", {"customer_id": "cus_123", "limit": 2})
        assert not is_error(r) and structured(r) == INVOICES
        assert json.loads(text_of(r)) == INVOICES
        with pytest.raises(McpError) as e:
            await s.call_tool("get_invoice_ledger", {"limit": 0})
        assert error_code(e.value) == -32602
        with pytest.raises(McpError) as e:
            await s.list_resources()
        assert error_code(e.value) == -32601
        await s.send_ping()


async def test_a_viewer_key_is_refused_before_any_dispatch(gw, api_factory):
    import httpx

    api = api_factory(gw.url)
    key = api.mint(f"viewer-{uuid.uuid4().hex[:8]}", "watcher", "viewer")
    r = httpx.post(f"{gw.url}/api/v1/mcp", headers={"X-API-Key": key, "X-Tenant-Id": "support"},
                   json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"

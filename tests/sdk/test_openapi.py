"""The public and admin API against its own /openapi.json, with schemathesis (property-based):
no 5xx, status codes, content types and bodies conform to the document. Both modes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import MODES

ADMIN = "schemathesis-admin-token-0123"


@pytest.mark.parametrize("mode", MODES)
def test_api_conforms_to_its_openapi_document(mode, launcher, tmp_path):
    redis_url = launcher.redis().url if mode == "shared" else None
    gw = launcher.gateway(redis_url=redis_url, extra_args=("--admin-token", ADMIN))
    doc = httpx.get(f"{gw.url}/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    st = Path(sys.executable).with_name("schemathesis")
    cmd = [
        str(st), "run", f"{gw.url}/openapi.json",
        "-H", f"Authorization: Bearer {ADMIN}",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "40"),
        "--seed", os.environ.get("SCHEMATHESIS_SEED", "20261122"),
        "--workers", "2",
        "--no-color",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert " passed" in out.stdout

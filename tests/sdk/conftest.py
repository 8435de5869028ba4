"""Fixtures for the SDK end-to-end suite: our own redis-server and gateway processes.

The process helpers live in ``tests/procs.py`` (shared with the MCP suite) and are re-exported
here, so ``from conftest import Launcher, free_port, ...`` keeps working. Nothing here names a
machine path: the repository root is derived from this file, the gateway binary comes from
``UNDERSTUDY_BIN`` or ``<repo>/target/debug/understudy-gateway`` (built beforehand: this suite
never runs cargo).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

import anthropic
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from procs import (  # noqa: E402  (re-exported: other test files import these from conftest)
    BIN_WAIT,
    FIXTURES,
    INVALID_MANIFESTS,
    MANIFESTS,
    MODES,
    READY_TIMEOUT,
    REPO_ROOT,
    Gateway,
    Launcher,
    Redis,
    clean_env,
    free_port,
    gateway_bin,
)

__all__ = [
    "BIN_WAIT", "FIXTURES", "INVALID_MANIFESTS", "MANIFESTS", "MODES", "READY_TIMEOUT", "REPO_ROOT",
    "Gateway", "Launcher", "Redis", "clean_env", "free_port", "gateway_bin",
]


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def session_launcher(log_dir) -> Iterator[Launcher]:
    launcher = Launcher(log_dir)
    yield launcher
    launcher.close()


@pytest.fixture
def launcher(log_dir) -> Iterator[Launcher]:
    launcher = Launcher(log_dir)
    yield launcher
    launcher.close()


@pytest.fixture(scope="session", params=MODES)
def gw(request, session_launcher) -> Gateway:
    """The shared gateway of the SDK tests, once per mode (embedded, shared with Redis)."""
    if request.param == "shared":
        redis = session_launcher.redis()
        return session_launcher.gateway(redis_url=redis.url, name="main")
    return session_launcher.gateway(name="main")


@pytest.fixture(scope="session")
def small_body_gw(session_launcher) -> Gateway:
    """A gateway with a 2 KiB body limit (embedded)."""
    return session_launcher.gateway(extra_args=("--max-body-bytes", "2048"), name="small-body")


# ---------------------------------------------------------------- clients


def oai(base_url: str, tenant: str | None = "support", **kw) -> openai.OpenAI:
    headers = {"X-Tenant-ID": tenant} if tenant else {}
    return openai.OpenAI(
        base_url=base_url,
        api_key="sk-test",
        default_headers=headers,
        max_retries=0,
        timeout=kw.pop("timeout", 20),
        _strict_response_validation=True,
        **kw,
    )


def ant(base_url: str, tenant: str | None = "support", **kw) -> anthropic.Anthropic:
    headers = {"X-Tenant-ID": tenant} if tenant else {}
    return anthropic.Anthropic(
        base_url=base_url,
        api_key="sk-ant-test",
        default_headers=headers,
        max_retries=0,
        timeout=kw.pop("timeout", 20),
        _strict_response_validation=True,
        **kw,
    )


@pytest.fixture
def openai_client(gw):
    """OpenAI client on the `support` tenant, base_url with /v1."""
    with oai(f"{gw.url}/v1") as c:
        yield c


@pytest.fixture
def anthropic_client(gw):
    """Anthropic client on the `support` tenant."""
    with ant(gw.url) as c:
        yield c


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def metric_lines(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " ")]


# ---------------------------------------------------------------- manifest reload helpers

OLD = "probe answer version one"
RELOAD_BOUND = 10.0


def copy_manifests(dst: Path) -> Path:
    d = dst / "manifests"
    shutil.copytree(MANIFESTS, d)
    return d


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text.replace(old, new))
    os.replace(tmp, path)


def probe(url: str) -> str:
    with oai(f"{url}/v1", timeout=5) as client:
        c = client.chat.completions.create(model="gpt-4o", messages=[user("probe")])
        return c.choices[0].message.content


def wait_for(url: str, expected: str, bound: float = RELOAD_BOUND) -> None:
    deadline = time.monotonic() + bound
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe(url)
        except Exception as e:  # noqa: BLE001 - keep polling through transient errors
            last = repr(e)
        if last == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} still answers {last!r}, expected {expected!r} within {bound}s")

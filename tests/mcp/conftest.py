"""Fixtures of the MCP end-to-end suite: gateways (embedded, shared with Redis), a pair of shared
gateways on one Redis behind a round-robin proxy, three shared gateways on one Redis addressed
directly (the execute API), and the anyio backend for the async tests.

Process helpers come from ``tests/procs.py`` (shared with tests/sdk); the gateway binary is
``UNDERSTUDY_BIN`` or ``<repo>/target/debug/understudy-gateway``, built beforehand.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mcpkit import ADMIN, BOUND, MCP_VERSION, Api  # noqa: E402
from procs import MODES, Gateway, Launcher  # noqa: E402
from proxy import RoundRobinProxy  # noqa: E402

GW_ARGS = ("--admin-token", ADMIN)


def pytest_report_header(config):
    return f"mcp {MCP_VERSION}"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def session_launcher(log_dir) -> Iterator[Launcher]:
    launcher = Launcher(log_dir)
    yield launcher
    launcher.close()


@pytest.fixture(scope="session", params=MODES)
def gw(request, session_launcher) -> Gateway:
    """One gateway per mode: embedded, and shared with its own Redis."""
    if request.param == "shared":
        redis = session_launcher.redis()
        return session_launcher.gateway(redis_url=redis.url, name="mcp-main", extra_args=GW_ARGS)
    return session_launcher.gateway(name="mcp-main", extra_args=GW_ARGS)


@pytest.fixture(scope="session")
def embedded_gw(session_launcher) -> Gateway:
    return session_launcher.gateway(name="mcp-embedded", extra_args=GW_ARGS)


@pytest.fixture(scope="session")
def small_body_gw(session_launcher) -> Gateway:
    """A gateway with a 2 KiB body limit (embedded)."""
    return session_launcher.gateway(extra_args=("--max-body-bytes", "2048", *GW_ARGS), name="mcp-small-body")


@dataclass
class Pair:
    """Two shared-mode gateways on one Redis, and a proxy that sends each request to the next."""

    a: Gateway
    b: Gateway
    proxy: RoundRobinProxy

    @property
    def url(self) -> str:
        return self.proxy.url

    def gateway(self, index: int) -> Gateway:
        return (self.a, self.b)[index]

    def mark(self) -> int:
        """A position in the proxy's answer log, for ``wait_answer``."""
        return len(self.proxy.responses)

    def wait_answer(self, method: str, path: str, since: int, bound: float = BOUND) -> tuple[int, str, str, int]:
        """The first answer, after ``since``, to ``method`` on a path starting with ``path``, once
        its status line has come back from the upstream (so the upstream has taken the request)."""
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            for entry in self.proxy.responses[since:]:
                if entry[1] == method and entry[2].startswith(path):
                    return entry
            time.sleep(0.02)
        raise AssertionError(f"no answer to {method} {path} through the proxy within {bound}s: "
                             f"{self.proxy.responses[since:]}")


@pytest.fixture(scope="session")
def pair(session_launcher) -> Iterator[Pair]:
    redis = session_launcher.redis()
    a = session_launcher.gateway(redis_url=redis.url, name="mcp-a", extra_args=GW_ARGS)
    b = session_launcher.gateway(redis_url=redis.url, name="mcp-b", extra_args=GW_ARGS)
    proxy = RoundRobinProxy([a.url, b.url]).start()
    yield Pair(a, b, proxy)
    proxy.close()


@dataclass
class Trio:
    """Three shared-mode gateways on one Redis, addressed directly (no proxy): a call started on
    one process is streamed, read and cancelled from the others."""

    a: Gateway
    b: Gateway
    c: Gateway

    @property
    def all(self) -> tuple[Gateway, Gateway, Gateway]:
        return (self.a, self.b, self.c)


@pytest.fixture(scope="session")
def trio(session_launcher) -> Trio:
    redis = session_launcher.redis()
    return Trio(*(session_launcher.gateway(redis_url=redis.url, name=f"exec-{n}", extra_args=GW_ARGS)
                  for n in "abc"))


@pytest.fixture
def api_factory():
    made: list[Api] = []

    def make(base: str) -> Api:
        made.append(Api(base))
        return made[-1]

    yield make
    for api in made:
        api.close()

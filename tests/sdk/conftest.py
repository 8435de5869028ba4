"""Fixtures for the SDK end-to-end suite: our own redis-server and gateway processes.

Nothing here names a machine path: the repository root is derived from this file, the gateway
binary comes from ``UNDERSTUDY_BIN`` or ``<repo>/target/debug/understudy-gateway`` (built
beforehand: this suite never runs cargo).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import anthropic
import httpx
import openai
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
MANIFESTS = FIXTURES / "manifests"
INVALID_MANIFESTS = FIXTURES / "invalid-manifests"

MODES = ["embedded", "shared"]

# Loopback traffic never goes through a proxy, whatever the environment says.
os.environ["NO_PROXY"] = ",".join(filter(None, ["127.0.0.1,localhost", os.environ.get("NO_PROXY")]))
os.environ["no_proxy"] = os.environ["NO_PROXY"]
READY_TIMEOUT = 30.0
BIN_WAIT = 60.0


def gateway_bin() -> str:
    """The gateway binary; waits while it is briefly missing (being rebuilt by someone else)."""
    path = Path(os.environ.get("UNDERSTUDY_BIN") or REPO_ROOT / "target" / "debug" / "understudy-gateway")
    deadline = time.monotonic() + BIN_WAIT
    while not (path.is_file() and os.access(path, os.X_OK)):
        if time.monotonic() > deadline:
            pytest.fail(f"gateway binary {path} not found (set UNDERSTUDY_BIN or build it first)")
        time.sleep(0.5)
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert port not in (6379, 8080)
    return port


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.setdefault("RUST_LOG", "info")
    return env


class Redis:
    """A throw-away redis-server: no persistence, loopback only."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        self.log = open(log_dir / f"redis-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [exe, "--save", "", "--appendonly", "no", "--port", str(self.port), "--bind", "127.0.0.1"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Gateway:
    """One understudy-gateway process on a free loopback port, ready when started."""

    def __init__(
        self,
        log_dir: Path,
        manifests: Path | None = MANIFESTS,
        redis_url: str | None = None,
        extra_args: tuple[str, ...] = (),
        drain_grace: str = "0s",
        name: str = "gw",
        env: dict[str, str] | None = None,
    ):
        self.manifests = manifests
        self.redis_url = redis_url
        self.mode = "shared" if redis_url else "embedded"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}-{self.mode}-{self.port}.log"
        args = [gateway_bin(), "--listen", f"127.0.0.1:{self.port}", "--drain-grace", drain_grace]
        if manifests is not None:
            args += ["--manifests", str(manifests)]
        if redis_url:
            args += ["--redis-url", redis_url]
        args += list(extra_args)
        self.args = args
        self._log = open(self.log_path, "wb")
        for attempt in range(5):
            try:
                self.proc = subprocess.Popen(
                    args, stdout=self._log, stderr=subprocess.STDOUT, env={**clean_env(), **(env or {})}
                )
                break
            except OSError:  # e.g. "Text file busy" while the binary is being replaced
                if attempt == 4:
                    raise
                time.sleep(2)
                args[0] = gateway_bin()
        self.wait_ready()

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"gateway exited with {self.proc.returncode} before ready:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"gateway on {self.url} not ready within {READY_TIMEOUT}s:\n{self.logs()}")
            time.sleep(0.05)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


class Launcher:
    """Starts processes and stops every one of them on close (in reverse order)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self._items: list[Gateway | Redis] = []

    def redis(self) -> Redis:
        r = Redis(self.log_dir)
        self._items.append(r)
        return r

    def gateway(self, **kw) -> Gateway:
        g = Gateway(self.log_dir, **kw)
        self._items.append(g)
        return g

    def close(self) -> None:
        for item in reversed(self._items):
            try:
                item.stop()
            except Exception:  # noqa: BLE001 - best effort teardown
                pass
        self._items.clear()


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

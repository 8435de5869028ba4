"""Process helpers shared by the end-to-end suites (tests/sdk, tests/mcp): our own redis-server
and gateway processes on free loopback ports.

Only the standard library, httpx and pytest are imported here, so that every suite's venv can use
this module whatever client SDKs it installs. Nothing here names a machine path: the repository
root is derived from this file, the gateway binary comes from ``UNDERSTUDY_BIN`` or
``<repo>/target/debug/understudy-gateway`` (built beforehand: the suites never run cargo).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
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

"""Logs and traces (SPEC §10): JSON logs with --log-format json, and OTLP/HTTP trace export when
OTEL_EXPORTER_OTLP_ENDPOINT is set, received by a real HTTP collector stand-in."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import free_port, oai, user


class Collector:
    """Records every OTLP/HTTP POST it receives."""

    def __init__(self):
        self.posts: list[tuple[str, str, bytes]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                posts.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_traces_are_exported_over_otlp_http(launcher):
    collector = Collector()
    try:
        gw = launcher.gateway(
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            }
        )
        with oai(f"{gw.url}/v1") as client:
            client.chat.completions.create(model="gpt-4o", messages=[user("hello")])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not collector.posts:
            time.sleep(0.1)
        if not collector.posts:
            gw.stop()  # shutdown flushes the batch
        assert collector.posts, "no OTLP export reached the collector"
        path, content_type, body = collector.posts[0]
        assert path == "/v1/traces"
        assert content_type == "application/x-protobuf"
        assert len(body) > 0
        assert b"understudy-gateway" in b"".join(p[2] for p in collector.posts), "service name in the resource"
    finally:
        collector.close()


def test_json_logs(launcher):
    gw = launcher.gateway(extra_args=("--log-format", "json"))
    gw.stop()
    lines = [line for line in gw.log_path.read_text().splitlines() if line.strip()]
    assert lines, "the gateway logged something"
    for line in lines:
        record = json.loads(line)
        assert "level" in record and "timestamp" in record
    assert any("serving" in json.loads(line).get("message", "") for line in lines)

"""A stand-in Kubernetes API server, just enough for Helm's own install action to run offline.

helm-sdkpy exposes no client-only dry run or `helm template`, so check.py renders the chart by
running a real `Install` against this server: Helm's engine renders the templates (with
`lookup` answered from `existing`), Helm's kube client maps every kind through discovery and
sends every object here, and this server records what it receives. Nothing is validated here;
check.py validates the recorded objects against the Kubernetes schemas of the version this
server reports (`git_version`).

It serves discovery (/version, /api, /apis, /api/v1, /apis/<group>/<version>) for the kinds
listed in RESOURCES, answers GET of one object from `existing` (else 404) and of a list with an
empty list, answers POST and PUT by echoing the body (JSON for chart objects; Helm's release
record arrives as protobuf and is echoed as it is), and PATCH of an object in `existing` (Helm
adopting it) with that object.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (group, version) -> [(plural, kind, namespaced)]
RESOURCES: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("", "v1"): [
        ("configmaps", "ConfigMap", True),
        ("events", "Event", True),
        ("namespaces", "Namespace", False),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True),
        ("pods", "Pod", True),
        ("secrets", "Secret", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("services", "Service", True),
    ],
    ("apps", "v1"): [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    ("batch", "v1"): [("jobs", "Job", True)],
    ("autoscaling", "v2"): [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    ("policy", "v1"): [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    ("rbac.authorization.k8s.io", "v1"): [
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("clusterroles", "ClusterRole", False),
        ("rolebindings", "RoleBinding", True),
        ("roles", "Role", True),
    ],
    ("coordination.k8s.io", "v1"): [("leases", "Lease", True)],
    ("events.k8s.io", "v1"): [("events", "Event", True)],
    ("apiextensions.k8s.io", "v1"): [
        ("customresourcedefinitions", "CustomResourceDefinition", False)
    ],
    ("monitoring.coreos.com", "v1"): [("servicemonitors", "ServiceMonitor", True)],
    ("understudy.dev", "v1alpha1"): [
        ("chaosprofiles", "ChaosProfile", True),
        ("scenarios", "Scenario", True),
        ("tenants", "Tenant", True),
    ],
}

# /api/v1/namespaces/ns/secrets/name, /apis/apps/v1/deployments, …
_OBJECT_PATH = re.compile(
    r"^/(?:api/v1|apis/[^/]+/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)


class FakeApiServer:
    """Run with `with FakeApiServer(...) as server:`; `server.kubeconfig` points Helm at it."""

    def __init__(self, git_version: str = "v1.28.7", existing: dict | None = None):
        # (namespace, plural, name) -> object, answered to GETs (Helm's `lookup`).
        self.existing: dict[tuple[str, str, str], dict] = existing or {}
        self.git_version = git_version
        self.created: list[dict] = []  # JSON objects received by POST, in order
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def kubeconfig(self) -> str:
        return (
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: fake, cluster: {{server: '{self.url}'}}}}]\n"
            "users: [{name: fake, user: {}}]\n"
            "contexts: [{name: fake, context: {cluster: fake, user: fake}}]\n"
            "current-context: fake\n"
        )

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _discovery(self, path: str):
        major, minor = self.git_version.lstrip("v").split(".")[:2]
        if path == "/version":
            return {"major": major, "minor": minor, "gitVersion": self.git_version,
                    "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            groups = []
            for group, version in RESOURCES:
                if group:
                    gv = {"groupVersion": f"{group}/{version}", "version": version}
                    groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        for (group, version), resources in RESOURCES.items():
            base = f"/apis/{group}/{version}" if group else "/api/v1"
            if path == base:
                verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
                return {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version,
                    "resources": [
                        {"name": plural, "singularName": kind.lower(), "namespaced": namespaced,
                         "kind": kind, "verbs": verbs}
                        for plural, kind, namespaced in resources
                    ],
                }
        return None

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: bytes, content_type: str = "application/json"):
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, obj) -> None:
                self._send(code, json.dumps(obj).encode())

            def _not_found(self) -> None:
                self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "NotFound", "code": 404, "message": "not found"})

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                with fake._lock:
                    fake.requests.append(("GET", self.path))
                found = fake._discovery(path)
                if found is not None:
                    return self._json(200, found)
                match = _OBJECT_PATH.match(path)
                if not match:
                    return self._not_found()
                if match["name"]:
                    key = (match["ns"] or "", match["plural"], match["name"])
                    if key in fake.existing:
                        return self._json(200, fake.existing[key])
                    return self._not_found()
                return self._json(200, {"kind": "List", "apiVersion": "v1", "metadata": {},
                                        "items": []})

            def _echo(self, code: int):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                content_type = self.headers.get("Content-Type") or "application/json"
                with fake._lock:
                    fake.requests.append((self.command, self.path))
                    if self.command == "POST" and content_type.startswith("application/json"):
                        fake.created.append(json.loads(raw))
                self._send(code, raw, content_type)

            def do_POST(self):
                self._echo(201)

            def do_PUT(self):
                self._echo(200)

            def do_PATCH(self):
                # Helm patches what it adopts (an object of an earlier release, from `existing`);
                # answer with that object as it stands.
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with fake._lock:
                    fake.requests.append(("PATCH", self.path))
                match = _OBJECT_PATH.match(self.path.split("?", 1)[0])
                key = (match["ns"] or "", match["plural"], match["name"]) if match else None
                if key not in fake.existing:
                    return self._not_found()
                self._json(200, fake.existing[key])

            def do_DELETE(self):
                with fake._lock:
                    fake.requests.append(("DELETE", self.path))
                self._json(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        return Handler

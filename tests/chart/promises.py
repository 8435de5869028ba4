"""What the chart promises about its output, checked on what Helm rendered for one set of values.

`problems(values, objects, hooks, fullname, namespace)` runs every check below and returns what
is wrong, as sentences. `values` are the merged values (defaults and override), `objects` what
Helm sent to the API server, `hooks` the test hooks.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "charts" / "understudy" / "files" / "helm-test.sh"

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}
STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                   "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "helm.sh/chart")
# Exactly what the operator uses (docs/operator.md): it watches and merge-patches its resources
# (finalizers included, no ownerReferences), merge-patches their status, records events.k8s.io/v1
# Events (kube-runtime's Recorder), and gets, creates and updates its Lease. Nothing more.
OPERATOR_RULES = [
    {"apiGroups": ["understudy.dev"], "resources": ["tenants", "scenarios", "chaosprofiles"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["understudy.dev"],
     "resources": ["tenants/status", "scenarios/status", "chaosprofiles/status"],
     "verbs": ["patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]
LEASE_RULES = [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["get", "create", "update"]}]
HOOK_DELETE_POLICY = "before-hook-creation,hook-succeeded"
# gateway.limits.<value> -> the gateway's variable (gateway/src/config.rs).
GATEWAY_LIMITS_ENV = {
    "headerTimeout": "UNDERSTUDY_HEADER_TIMEOUT",
    "bodyTimeout": "UNDERSTUDY_BODY_TIMEOUT",
    "maxConnections": "UNDERSTUDY_MAX_CONNECTIONS",
    "maxAnswerBytes": "UNDERSTUDY_MAX_ANSWER_BYTES",
    "maxStreamEvents": "UNDERSTUDY_MAX_STREAM_EVENTS",
}
METRICS_LABEL = "understudy.dev/metrics"


def dig(obj, *path, default=None):
    """obj[path[0]][path[1]]…, or default where the path does not exist."""
    for key in path:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return default
    return obj


def env_of(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container.get("env") or []}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def secret_value(secret: dict | None, key: str) -> str | None:
    """The decoded value of `key` in a rendered Secret, None when either is missing."""
    data = dig(secret, "data", key)
    return None if data is None else base64.b64decode(data).decode()


def pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") in ("Deployment", "StatefulSet", "Job"):
        return dig(obj, "spec", "template", "spec")
    return None


class Rendered:
    """One rendering, indexed for the checks."""

    def __init__(self, values: dict, objects: list[dict], hooks: list[dict], fullname: str,
                 namespace: str) -> None:
        self.values, self.objects, self.hooks = values, objects, hooks
        self.fullname, self.namespace = fullname, namespace
        self.everything = objects + hooks
        self.by_kind_name = {(o["kind"], dig(o, "metadata", "name")): o for o in self.everything}
        self.secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
        redis_sets = self.find("StatefulSet", "redis")
        self.redis = redis_sets[0] if len(redis_sets) == 1 else None
        gateways = self.find("Deployment", "gateway")
        operators = self.find("Deployment", "operator")
        self.gateway = gateways[0] if len(gateways) == 1 else None
        self.operator = operators[0] if len(operators) == 1 else None
        self.gateway_container = dig(self.gateway, "spec", "template", "spec", "containers", 0,
                                     default={})
        self.operator_container = dig(self.operator, "spec", "template", "spec", "containers", 0,
                                      default={})
        # The gateway's data-plane Service and its metrics Service, by the names the docs give.
        self.gateway_service = self.by_kind_name.get(("Service", f"{fullname}-gateway"))
        self.gateway_metrics_service = self.by_kind_name.get(
            ("Service", f"{fullname}-gateway-metrics"))

    def find(self, kind: str, component: str | None = None) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind and (
            component is None
            or dig(o, "metadata", "labels", "app.kubernetes.io/component") == component)]

    def image(self, component: str) -> str:
        image = self.values[component]["image"]
        if image.get("digest"):
            return f"{image['repository']}@{image['digest']}"
        return f"{image['repository']}:{image['tag'] or '0.1.0'}"


def names_and_labels(r: Rendered) -> list[str]:
    p = []
    for obj in r.everything:
        kind, name = obj["kind"], dig(obj, "metadata", "name", default="")
        what = f"{kind} {name}"
        if not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
            p.append(f"{what}: name is not a DNS-1123 subdomain")
        if kind == "Service" and (not DNS1035_LABEL.match(name) or len(name) > 63):
            p.append(f"{what}: Service name is not a DNS-1035 label of at most 63 characters")
        namespace = dig(obj, "metadata", "namespace")
        if kind in CLUSTER_SCOPED and namespace:
            p.append(f"{what}: cluster-scoped but has a namespace")
        if kind not in CLUSTER_SCOPED and not namespace:
            p.append(f"{what}: no metadata.namespace")
        if kind == "CustomResourceDefinition":
            continue
        labels = dig(obj, "metadata", "labels", default={})
        p += [f"{what}: label {key} is missing" for key in STANDARD_LABELS if key not in labels]
        for key, value in labels.items():
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                p.append(f"{what}: label {key}={value!r} is not a valid label value")
        for key, value in (r.values.get("commonLabels") or {}).items():
            if labels.get(key) != value:
                p.append(f"{what}: commonLabels {key} missing")
    return p


def hardened_workloads(r: Rendered) -> list[str]:
    """Non-root, read-only, no capabilities, seccomp; resources; selectors match their pods;
    `$(VAR)` only after VAR."""
    p = []
    for obj in r.everything:
        spec = pod_spec(obj)
        if spec is None:
            continue
        what = f"{obj['kind']} {obj['metadata']['name']}"
        pod_security = spec.get("securityContext") or {}
        if pod_security.get("runAsNonRoot") is not True:
            p.append(f"{what}: pod securityContext.runAsNonRoot is not true")
        if dig(pod_security, "seccompProfile", "type") != "RuntimeDefault":
            p.append(f"{what}: pod seccompProfile is not RuntimeDefault")
        for container in spec.get("containers") or []:
            security = container.get("securityContext") or {}
            where = f"{what} container {container.get('name')}"
            if security.get("allowPrivilegeEscalation") is not False:
                p.append(f"{where}: allowPrivilegeEscalation is not false")
            if security.get("readOnlyRootFilesystem") is not True:
                p.append(f"{where}: readOnlyRootFilesystem is not true")
            if "ALL" not in (dig(security, "capabilities", "drop") or []):
                p.append(f"{where}: capabilities do not drop ALL")
            if obj["kind"] != "Job" and not container.get("resources"):
                p.append(f"{where}: no resources")
            defined = set()
            for entry in container.get("env") or []:
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", entry.get("value") or ""):
                    if ref not in defined:
                        p.append(f"{where}: env {entry['name']} uses $({ref}) before it is defined")
                defined.add(entry["name"])
        if obj["kind"] != "Job":
            selector = dig(obj, "spec", "selector", "matchLabels", default={})
            pod_labels = dig(obj, "spec", "template", "metadata", "labels", default={})
            if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
                p.append(f"{what}: selector does not match its pod labels")
    return p


def secret_references(r: Rendered) -> list[str]:
    """Secrets read by pods are made by the chart (with that key) or named in the values."""
    p = []
    declared = {
        dig(r.values, "adminToken", "existingSecret"),
        dig(r.values, "redis", "external", "existingSecret"),
        dig(r.values, "gateway", "oidc", "clientSecret", "existingSecret"),
        dig(r.values, "redis", "bundled", "auth", "existingSecret"),
    } - {"", None}
    for obj in r.everything:
        for container in (pod_spec(obj) or {}).get("containers") or []:
            for entry in container.get("env") or []:
                ref = dig(entry, "valueFrom", "secretKeyRef")
                if not ref:
                    continue
                secret = r.secrets.get(ref["name"])
                if secret is None and ref["name"] not in declared:
                    p.append(f"{obj['metadata']['name']}: env {entry['name']} reads Secret "
                             f"{ref['name']}, which neither the chart nor the values provide")
                if secret is not None and ref["key"] not in (secret.get("data") or {}):
                    p.append(f"{obj['metadata']['name']}: env {entry['name']} reads key "
                             f"{ref['key']} missing from Secret {ref['name']}")
    for secret in r.secrets.values():
        for key, value in (secret.get("data") or {}).items():
            if not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", value or ""):
                p.append(f"Secret {secret['metadata']['name']}: data {key} is not base64")
    # What the Secrets hold never appears in the clear anywhere else (pods read it by reference).
    others = repr([o for o in r.everything if o.get("kind") != "Secret"])
    for secret in r.secrets.values():
        for key in secret.get("data") or {}:
            value = secret_value(secret, key)
            if value and value in others:
                p.append(f"the value of Secret {secret['metadata']['name']} key {key} appears in "
                         "the clear outside the Secret")
    return p


def services_match(r: Rendered) -> list[str]:
    """Every Service selects exactly one workload and targets ports it declares."""
    p = []
    workloads = r.find("Deployment") + r.find("StatefulSet")
    for service in r.find("Service"):
        selector = dig(service, "spec", "selector", default={})
        matches = [w for w in workloads
                   if all(dig(w, "spec", "template", "metadata", "labels", k) == v
                          for k, v in selector.items())]
        name = service["metadata"]["name"]
        if len(matches) != 1:
            p.append(f"Service {name}: selects {len(matches)} workloads, expected 1")
            continue
        ports = {port["name"] for c in matches[0]["spec"]["template"]["spec"]["containers"]
                 for port in c.get("ports") or []}
        for port in dig(service, "spec", "ports", default=[]):
            if isinstance(port.get("targetPort"), str) and port["targetPort"] not in ports:
                p.append(f"Service {name}: targetPort {port['targetPort']} is not a container port")
    return p


def gateway(r: Rendered) -> list[str]:
    if r.gateway is None:
        return ["expected exactly one gateway Deployment"]
    p = []
    values, pod, gw = r.values["gateway"], r.gateway["spec"]["template"]["spec"], r.gateway_container
    env = env_of(gw)
    if gw.get("image") != r.image("gateway"):
        p.append(f"gateway image is {gw.get('image')}, expected {r.image('gateway')}")
    needed = values["preStopSeconds"] + values["drainGraceSeconds"] + values["drainTimeoutSeconds"]
    if (pod.get("terminationGracePeriodSeconds") or 30) <= needed:
        p.append(f"gateway terminationGracePeriodSeconds {pod.get('terminationGracePeriodSeconds')}"
                 f" is not above preStop + drainGrace + drainTimeout = {needed}")
    pre_stop = dig(gw, "lifecycle", "preStop", "exec", "command")
    want_pre_stop = ["/usr/local/bin/understudy-gateway", "sleep", f"{values['preStopSeconds']}s"]
    if pre_stop != want_pre_stop:
        p.append(f"gateway preStop is {pre_stop}, expected {want_pre_stop}")
    if pod.get("automountServiceAccountToken") is not False:
        p.append("gateway pods mount a ServiceAccount token they do not need")
    metrics_port = values["metrics"]["port"]
    want_ports = {("http", 8080), ("metrics", metrics_port)}
    if {(q["name"], q["containerPort"]) for q in gw.get("ports") or []} != want_ports or \
            len(gw.get("ports") or []) != 2:
        p.append(f"gateway must expose exactly port 8080 named http and {metrics_port} named "
                 f"metrics, not {gw.get('ports')}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        if dig(gw, probe, "httpGet", "path") != path or \
                dig(gw, probe, "httpGet", "port") != "http":
            p.append(f"gateway {probe} must be {path} on port http")

    oidc = values["oidc"]
    want = {
        "UNDERSTUDY_LISTEN": "0.0.0.0:8080",
        # /metrics on its own listener (the data-plane listener then answers it with 404).
        "UNDERSTUDY_METRICS_LISTEN": f"0.0.0.0:{metrics_port}",
        "UNDERSTUDY_ALLOW_ANONYMOUS": str(values["allowAnonymous"]).lower(),
        "UNDERSTUDY_CORS_ORIGINS": values["corsOrigins"],
        "UNDERSTUDY_LOG_FORMAT": r.values["logFormat"],
        "UNDERSTUDY_MAX_BODY_BYTES": str(values["maxBodyBytes"]),
        "UNDERSTUDY_DRAIN_GRACE": f"{values['drainGraceSeconds']}s",
        "UNDERSTUDY_DRAIN_TIMEOUT": f"{values['drainTimeoutSeconds']}s",
        "UNDERSTUDY_AUDIT_RETENTION": values["auditRetention"],
        "UNDERSTUDY_MCP_SESSION_IDLE": values["mcp"]["sessionIdle"],
        "UNDERSTUDY_CHANNEL_MAX_PAYLOAD_BYTES": str(values["channels"]["maxPayloadBytes"]),
        "UNDERSTUDY_CHANNEL_RETENTION": str(values["channels"]["retention"]),
        **{name: str(values["limits"][key]) for key, name in GATEWAY_LIMITS_ENV.items()},
    }
    optional = {
        "UNDERSTUDY_PUBLIC_URL": values["publicUrl"],
        "UNDERSTUDY_MCP_ALLOWED_ORIGINS": values["mcp"]["allowedOrigins"],
        "UNDERSTUDY_OIDC_ISSUER": oidc["issuer"],
        "UNDERSTUDY_OIDC_CLIENT_ID": oidc["clientId"],
        "UNDERSTUDY_OIDC_ROLE_CLAIM": oidc["roleClaim"],
        "OTEL_EXPORTER_OTLP_ENDPOINT": values["otlpEndpoint"],
    }
    for name, value in optional.items():
        if value:
            want[name] = value
        elif name in env:
            p.append(f"gateway env {name} is set although its value is empty")
    for name, value in want.items():
        if dig(env, name, "value") != value:
            p.append(f"gateway env {name} is {dig(env, name, 'value')!r}, expected {value!r}")
    admin = r.values["adminToken"]
    admin_ref = dig(env, "UNDERSTUDY_ADMIN_TOKEN", "valueFrom", "secretKeyRef")
    want_ref = {"name": admin["existingSecret"] or f"{r.fullname}-admin",
                "key": admin["existingSecretKey"]}
    if admin_ref != want_ref:
        p.append(f"gateway UNDERSTUDY_ADMIN_TOKEN comes from {admin_ref}, expected {want_ref}")
    client_secret = oidc["clientSecret"]
    if client_secret["existingSecret"] or client_secret["value"]:
        ref = dig(env, "UNDERSTUDY_OIDC_CLIENT_SECRET", "valueFrom", "secretKeyRef")
        want_ref = {"name": client_secret["existingSecret"] or f"{r.fullname}-oidc",
                    "key": client_secret["existingSecretKey"]}
        if ref != want_ref:
            p.append(f"gateway UNDERSTUDY_OIDC_CLIENT_SECRET comes from {ref}, expected {want_ref}")
    elif "UNDERSTUDY_OIDC_CLIENT_SECRET" in env:
        p.append("gateway UNDERSTUDY_OIDC_CLIENT_SECRET is set without a client secret")
    for extra in values["extraEnv"]:
        if env.get(extra["name"]) != extra:
            p.append(f"gateway extraEnv {extra['name']} is missing")

    autoscaling = values["autoscaling"]
    hpas = r.find("HorizontalPodAutoscaler")
    if autoscaling["enabled"]:
        if "replicas" in r.gateway["spec"]:
            p.append("gateway Deployment sets replicas although an HPA scales it")
        if len(hpas) != 1 or dig(hpas[0], "spec", "scaleTargetRef", "name") != \
                r.gateway["metadata"]["name"]:
            p.append("expected one HPA scaling the gateway Deployment")
        elif dig(hpas[0], "spec", "metrics", 0, "resource", "target", "averageUtilization") != \
                autoscaling["targetCPUUtilizationPercentage"]:
            p.append("HPA CPU target does not match the values")
    else:
        if r.gateway["spec"].get("replicas") != values["replicas"]:
            p.append(f"gateway replicas {r.gateway['spec'].get('replicas')}, "
                     f"expected {values['replicas']}")
        if hpas:
            p.append("HPA rendered although autoscaling is off")
    selector = r.gateway["spec"]["selector"]["matchLabels"]
    pdbs = r.find("PodDisruptionBudget")
    if values["podDisruptionBudget"]["enabled"]:
        if len(pdbs) != 1 or dig(pdbs[0], "spec", "selector", "matchLabels") != selector or \
                dig(pdbs[0], "spec", "minAvailable") != values["podDisruptionBudget"]["minAvailable"]:
            p.append("expected one PDB selecting the gateway pods with the configured minAvailable")
    elif pdbs:
        p.append("PDB rendered although it is off")
    spread, spread_values = pod.get("topologySpreadConstraints"), values["topologySpread"]
    if spread_values["enabled"]:
        if not spread or dig(spread, 0, "topologyKey") != spread_values["topologyKey"] \
                or dig(spread, 0, "whenUnsatisfiable") != spread_values["whenUnsatisfiable"] \
                or dig(spread, 0, "labelSelector", "matchLabels") != selector:
            p.append(f"gateway topologySpreadConstraints are {spread}")
    elif spread:
        p.append("topologySpreadConstraints rendered although topologySpread is off")
    service = r.gateway_service
    want_ports = [{"name": "http", "port": values["service"]["port"], "targetPort": "http",
                   "protocol": "TCP"}]
    if service is None or dig(service, "spec", "ports") != want_ports or \
            dig(service, "spec", "type") != values["service"]["type"]:
        p.append(f"expected the gateway Service {r.fullname}-gateway of the configured type with "
                 f"exactly the port {want_ports}")
    return p


def target_container_port(port: dict, workload: dict | None) -> dict | None:
    """The container port (of the workload the Service selects) that a Service port forwards
    to: by name for a named targetPort, else by number (targetPort, or port when unset)."""
    target = port.get("targetPort", port.get("port"))
    for container in dig(workload, "spec", "template", "spec", "containers", default=[]):
        for declared in container.get("ports") or []:
            if (isinstance(target, str) and declared.get("name") == target) or \
                    (not isinstance(target, str) and declared.get("containerPort") == target):
                return declared
    return None


def gateway_metrics_private(r: Rendered) -> list[str]:
    """/metrics lists every tenant's id and traffic: the gateway serves it on its own port, which
    only the ClusterIP Service <fullname>-gateway-metrics exposes (with nothing else), never the
    data-plane Service nor any other Service selecting the gateway pods."""
    if r.gateway is None:
        return []
    p = []
    port = r.values["gateway"]["metrics"]["port"]
    pod_labels = dig(r.gateway, "spec", "template", "metadata", "labels", default={})
    metrics_name = f"{r.fullname}-gateway-metrics"
    for service in r.find("Service"):
        selector = dig(service, "spec", "selector", default={})
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            continue
        name = service["metadata"]["name"]
        targets = {q.get("name"): target_container_port(q, r.gateway)
                   for q in dig(service, "spec", "ports", default=[])}
        to_metrics = [q for q, c in targets.items()
                      if c is not None and c.get("containerPort") == port]
        if name != metrics_name:
            if to_metrics:
                p.append(f"Service {name} exposes the gateway's metrics port {port} (ports "
                         f"{to_metrics}): only {metrics_name} may")
            if dig(service, "metadata", "labels", METRICS_LABEL) is not None:
                p.append(f"Service {name} carries {METRICS_LABEL}, so the gateway's "
                         "ServiceMonitor would scrape it")
    service = r.gateway_metrics_service
    if service is None:
        return p + [f"no Service {metrics_name} for the gateway's metrics"]
    want_ports = [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}]
    if dig(service, "spec", "ports") != want_ports:
        p.append(f"Service {metrics_name} must have exactly the port {want_ports}, "
                 f"not {dig(service, 'spec', 'ports')}")
    if dig(service, "spec", "type") != "ClusterIP":
        p.append(f"Service {metrics_name} must be ClusterIP, not {dig(service, 'spec', 'type')}")
    if dig(service, "metadata", "labels", METRICS_LABEL) != "true":
        p.append(f"Service {metrics_name} lacks the label {METRICS_LABEL}: \"true\"")
    if any(pod_labels.get(k) != v for k, v in dig(service, "spec", "selector", default={}).items()):
        p.append(f"Service {metrics_name} does not select the gateway pods")
    return p


def operator(r: Rendered) -> list[str]:
    if r.operator is None:
        return ["expected exactly one operator Deployment"]
    p = []
    values, op = r.values["operator"], r.operator_container
    env = env_of(op)
    if op.get("image") != r.image("operator"):
        p.append(f"operator image is {op.get('image')}, expected {r.image('operator')}")
    if r.operator["spec"].get("replicas") != values["replicas"]:
        p.append("operator replicas do not match the values")
    strategy = dig(r.operator, "spec", "strategy", "type")
    if not values["leaderElection"]["enabled"] and strategy != "Recreate":
        p.append(f"operator without leader election: strategy is {strategy}, expected Recreate "
                 "(a rolling update would briefly run two active operators)")
    if values["leaderElection"]["enabled"] and strategy == "Recreate":
        p.append("operator with leader election: a Recreate rollout leaves no standby")
    want = {
        "UNDERSTUDY_LISTEN": "0.0.0.0:8081",
        "UNDERSTUDY_NAMESPACES": ",".join(values["watchNamespaces"]),
        "UNDERSTUDY_LEADER_ELECTION": str(values["leaderElection"]["enabled"]).lower(),
        "UNDERSTUDY_LEASE_NAME": values["leaderElection"]["leaseName"] or f"{r.fullname}-operator",
        "UNDERSTUDY_LEASE_NAMESPACE": r.namespace,
        "UNDERSTUDY_RESYNC_INTERVAL": values["resyncInterval"],
        "UNDERSTUDY_STATUS_INTERVAL": values["statusInterval"],
        "UNDERSTUDY_LOG_FORMAT": r.values["logFormat"],
    }
    for name, value in want.items():
        if dig(env, name, "value") != value:
            p.append(f"operator env {name} is {dig(env, name, 'value')!r}, expected {value!r}")
    for name, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        if dig(env, name, "valueFrom", "fieldRef", "fieldPath") != path:
            p.append(f"operator env {name} must come from the downward API ({path})")
    for extra in values["extraEnv"]:
        if env.get(extra["name"]) != extra:
            p.append(f"operator extraEnv {extra['name']} is missing")
    if {(q["name"], q["containerPort"]) for q in op.get("ports") or []} != {("http-metrics", 8081)}:
        p.append("operator must expose exactly port 8081 named http-metrics")
    if dig(op, "livenessProbe", "httpGet", "path") != "/healthz" or \
            dig(op, "readinessProbe", "httpGet", "path") != "/readyz":
        p.append("operator probes must be /healthz (liveness) and /readyz (readiness)")
    services = r.find("Service", "operator")
    if len(services) != 1 or dig(services[0], "spec", "ports", 0, "targetPort") != "http-metrics" \
            or dig(services[0], "spec", "ports", 0, "port") != values["service"]["port"]:
        p.append("expected one operator metrics Service targeting http-metrics on service.port")
    return p


def redis(r: Rendered) -> list[str]:
    """The operator and the gateway get the same Redis URL, built as the values say; the
    bundled Redis is what redis.bundled says."""
    p = []
    redis_values = r.values["redis"]
    urls = {dig(env_of(c), "UNDERSTUDY_REDIS_URL", "value")
            for c in (r.operator_container, r.gateway_container)}
    if len(urls) != 1:
        p.append(f"operator and gateway get different Redis URLs: {urls}")
    url = urls.pop()
    statefulsets = r.find("StatefulSet", "redis")
    if redis_values["mode"] == "external":
        external = redis_values["external"]
        auth = ""
        if external["existingSecret"]:
            auth = f"{external.get('username', '')}:$(REDIS_PASSWORD)@"
            for container in (r.operator_container, r.gateway_container):
                if dig(env_of(container), "REDIS_PASSWORD", "valueFrom", "secretKeyRef") != {
                        "name": external["existingSecret"], "key": external["existingSecretKey"]}:
                    p.append(f"{container.get('name')}: REDIS_PASSWORD must come from "
                             "redis.external.existingSecret")
        elif external.get("username"):
            auth = f"{external['username']}@"
        scheme = "rediss" if external["tls"] else "redis"
        want_url = f"{scheme}://{auth}{external['host']}:{external['port']}/{external['db']}"
        if url != want_url:
            p.append(f"external Redis URL is {url}, expected {want_url}")
        if statefulsets or r.find("Service", "redis"):
            p.append("external Redis: the chart must not install a Redis")
        return p

    bundled = redis_values["bundled"]
    auth = bundled["auth"]
    secret_name = auth["existingSecret"] or f"{r.fullname}-redis-auth"
    password_ref = {"name": secret_name, "key": auth["existingSecretKey"]}
    want_url = (f"redis://:$(REDIS_PASSWORD)@{r.fullname}-redis:6379/0" if auth["enabled"]
                else f"redis://{r.fullname}-redis:6379/0")
    if url != want_url:
        p.append(f"bundled Redis URL is {url}, expected {want_url}")
    if ("Service", f"{r.fullname}-redis") not in r.by_kind_name:
        p.append(f"no Service {r.fullname}-redis for the bundled Redis")
    if len(statefulsets) != 1:
        return p + ["bundled Redis: expected one StatefulSet"]
    statefulset = statefulsets[0]
    pod = statefulset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container.get("args") or []
    redis_env = env_of(container)
    chart_secret = r.secrets.get(f"{r.fullname}-redis-auth")
    clients = ((r.operator_container, "operator"), (r.gateway_container, "gateway"),
               (container, "redis"))
    if auth["enabled"]:
        for client, name in clients:
            if dig(env_of(client), "REDIS_PASSWORD", "valueFrom", "secretKeyRef") != password_ref:
                p.append(f"{name}: REDIS_PASSWORD must come from Secret {password_ref}")
        if dig(redis_env, "REDISCLI_AUTH", "valueFrom", "secretKeyRef") != password_ref:
            p.append("Redis: REDISCLI_AUTH (the probes' redis-cli password) must come from "
                     f"Secret {password_ref}")
        pairs = list(zip(args, args[1:]))
        if ("--requirepass", "$(REDIS_PASSWORD)") not in pairs:
            p.append(f"Redis args {args}: expected --requirepass $(REDIS_PASSWORD)")
        if auth["existingSecret"]:
            if chart_secret is not None:
                p.append("the chart made a Redis password Secret although auth.existingSecret "
                         "is set")
        elif chart_secret is None:
            p.append(f"no Secret {r.fullname}-redis-auth holding the Redis password")
        else:
            password = secret_value(chart_secret, auth["existingSecretKey"]) or ""
            if not re.fullmatch(r"[A-Za-z0-9]{48}", password):
                p.append("the generated Redis password is not 48 alphanumeric characters")
            if dig(chart_secret, "metadata", "annotations", "helm.sh/resource-policy") != "keep":
                p.append("the Redis password Secret lacks helm.sh/resource-policy: keep")
    else:
        for client, name in clients:
            if "REDIS_PASSWORD" in env_of(client):
                p.append(f"{name}: REDIS_PASSWORD is set although redis.bundled.auth is off")
        if "REDISCLI_AUTH" in redis_env or "--requirepass" in args:
            p.append("Redis requires a password although redis.bundled.auth is off")
        if chart_secret is not None:
            p.append("a Redis password Secret is rendered although redis.bundled.auth is off")
    aof = "--appendonly" in args and dig(args, args.index("--appendonly") + 1) == "yes"
    if aof != bundled["persistence"]["aof"]:
        p.append(f"Redis args {args}: appendonly does not follow persistence.aof")
    if bundled["persistence"]["aof"] and "everysec" not in args:
        p.append("Redis AOF must use --appendfsync everysec")
    if bundled["extraArgs"] and args[-len(bundled["extraArgs"]):] != bundled["extraArgs"]:
        p.append("Redis extraArgs are not passed")
    claims = dig(statefulset, "spec", "volumeClaimTemplates", default=[])
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    persistence = bundled["persistence"]
    if persistence["enabled"]:
        if len(claims) != 1 or dig(claims[0], "spec", "resources", "requests", "storage") != \
                persistence["size"] or "data" in volumes:
            p.append("Redis persistence: expected one volume claim template 'data' of the size")
        elif persistence["storageClass"] and \
                dig(claims[0], "spec", "storageClassName") != persistence["storageClass"]:
            p.append("Redis persistence: storageClass not applied")
    elif claims or "emptyDir" not in volumes.get("data", {}):
        p.append("Redis without persistence: expected an emptyDir 'data' and no claim")
    if dig(pod, "securityContext", "runAsUser") != 999:
        p.append("Redis must run as user 999")
    for probe in ("livenessProbe", "readinessProbe"):
        command = dig(container, probe, "exec", "command", default=[])
        if "ping" not in " ".join(command):
            p.append(f"Redis {probe} must use redis-cli ping")
        # The password reaches redis-cli through REDISCLI_AUTH, never on a command line.
        if re.search(r"(^|\s)(-a|--pass|--askpass)(\s|$)", " ".join(command)):
            p.append(f"Redis {probe} passes the password on the command line")
    headless = r.by_kind_name.get(("Service", statefulset["spec"]["serviceName"]))
    if not headless or dig(headless, "spec", "clusterIP") != "None":
        p.append("Redis StatefulSet serviceName must be a headless Service of the chart")
    return p


def checksums(r: Rendered) -> list[str]:
    """Each pod carries checksum/<credential> annotations for exactly the credentials it reads:
    the SHA-256 of the value for a Secret the chart makes (the very value in that Secret, also
    when it was generated in this render), of "secret:<name>/<key>" for the user's Secret."""
    values = r.values

    def of_existing(name: str, key: str) -> str:
        return sha256(f"secret:{name}/{key}")

    def of_chart_secret(name: str, key: str) -> str | None:
        value = secret_value(r.secrets.get(name), key)
        return None if value is None else sha256(value)

    admin = values["adminToken"]
    admin_sum = (of_existing(admin["existingSecret"], admin["existingSecretKey"])
                 if admin["existingSecret"]
                 else of_chart_secret(f"{r.fullname}-admin", admin["existingSecretKey"]))
    redis_sum = None
    if values["redis"]["mode"] == "bundled":
        auth = values["redis"]["bundled"]["auth"]
        if auth["enabled"]:
            redis_sum = (of_existing(auth["existingSecret"], auth["existingSecretKey"])
                         if auth["existingSecret"]
                         else of_chart_secret(f"{r.fullname}-redis-auth",
                                              auth["existingSecretKey"]))
    elif values["redis"]["external"]["existingSecret"]:
        external = values["redis"]["external"]
        redis_sum = of_existing(external["existingSecret"], external["existingSecretKey"])
    client_secret = values["gateway"]["oidc"]["clientSecret"]
    oidc_sum = None
    if client_secret["existingSecret"]:
        oidc_sum = of_existing(client_secret["existingSecret"], client_secret["existingSecretKey"])
    elif client_secret["value"]:
        oidc_sum = sha256(client_secret["value"])
        if of_chart_secret(f"{r.fullname}-oidc", client_secret["existingSecretKey"]) != oidc_sum:
            return ["the OIDC client secret Secret does not hold gateway.oidc.clientSecret.value"]

    wanted = {
        "gateway": (r.gateway, {"checksum/admin-token": admin_sum,
                                "checksum/redis-password": redis_sum,
                                "checksum/oidc-client-secret": oidc_sum}),
        "operator": (r.operator, {"checksum/redis-password": redis_sum}),
        "redis": (r.redis, {"checksum/redis-password": redis_sum}),
    }
    p = []
    for component, (workload, sums) in wanted.items():
        if workload is None:
            continue
        want = {key: value for key, value in sums.items() if value is not None}
        annotations = dig(workload, "spec", "template", "metadata", "annotations", default={})
        got = {key: value for key, value in annotations.items() if key.startswith("checksum/")}
        if got != want:
            p.append(f"{component} pod checksum annotations are {got}, expected {want}")
    if admin_sum is None:
        p.append("no admin token to compute checksum/admin-token from")
    return p


def rbac(r: Rendered) -> list[str]:
    """Least privilege, cluster-wide or per watched namespace; a lease Role for leader election."""
    if r.operator is None:
        return []
    p = []
    values = r.values["operator"]
    subjects = [{"kind": "ServiceAccount", "namespace": r.namespace,
                 "name": r.operator["spec"]["template"]["spec"].get("serviceAccountName")}]
    is_lease = lambda o: o["metadata"]["name"].endswith("-leader-election")  # noqa: E731
    roles = [o for o in r.find("Role") if not is_lease(o)]
    bindings = [o for o in r.find("RoleBinding") if not is_lease(o)]
    cluster_roles, cluster_bindings = r.find("ClusterRole"), r.find("ClusterRoleBinding")
    namespaces = values["watchNamespaces"]
    if not namespaces:
        if len(cluster_roles) != 1 or cluster_roles[0].get("rules") != OPERATOR_RULES or roles:
            p.append("all namespaces: expected exactly one ClusterRole with the operator's rules")
        if len(cluster_bindings) != 1 or cluster_bindings[0].get("subjects") != subjects:
            p.append("ClusterRoleBinding must bind the operator's ServiceAccount")
    else:
        if cluster_roles or cluster_bindings:
            p.append("watched namespaces: no ClusterRole or ClusterRoleBinding expected")
        if sorted(o["metadata"]["namespace"] for o in roles) != sorted(namespaces) or \
                any(o.get("rules") != OPERATOR_RULES for o in roles):
            p.append("expected one Role with the operator's rules in each watched namespace")
        if sorted(o["metadata"]["namespace"] for o in bindings) != sorted(namespaces) or \
                any(o.get("subjects") != subjects for o in bindings):
            p.append("expected a RoleBinding to the operator's ServiceAccount in each namespace")
    lease_roles = [o for o in r.find("Role") if is_lease(o)]
    lease_bindings = [o for o in r.find("RoleBinding") if is_lease(o)]
    if values["leaderElection"]["enabled"]:
        if len(lease_roles) != 1 or lease_roles[0]["metadata"]["namespace"] != r.namespace or \
                lease_roles[0].get("rules") != LEASE_RULES:
            p.append("leader election: expected one Role on leases in the release namespace")
        if len(lease_bindings) != 1 or lease_bindings[0].get("subjects") != subjects:
            p.append("leader election: the lease Role must be bound to the operator")
    elif lease_roles or lease_bindings:
        p.append("leader election is off but a lease Role is rendered")
    for component in ("operator", "gateway"):
        if r.values[component]["serviceAccount"]["create"] and \
                not r.find("ServiceAccount", component):
            p.append(f"no ServiceAccount for the {component}")
    return p


def admin_token(r: Rendered) -> list[str]:
    p = []
    values = r.values["adminToken"]
    name = f"{r.fullname}-admin"
    if values["existingSecret"]:
        return [f"Secret {name} rendered although adminToken.existingSecret is set"] \
            if name in r.secrets else []
    secret = r.secrets.get(name)
    if secret is None:
        return ["no admin token Secret"]
    token = base64.b64decode(dig(secret, "data", values["existingSecretKey"], default="")).decode()
    if len(token) < 16:
        p.append("the admin token is shorter than 16 characters")
    if values["value"] and token != values["value"]:
        p.append("the admin token Secret does not hold adminToken.value")
    if not values["value"] and not re.fullmatch(r"[A-Za-z0-9]{48}", token):
        p.append("the generated admin token is not 48 alphanumeric characters")
    if dig(secret, "metadata", "annotations", "helm.sh/resource-policy") != "keep":
        p.append("the admin token Secret lacks helm.sh/resource-policy: keep")
    return p


def metrics(r: Rendered) -> list[str]:
    """ServiceMonitors select one metrics Service each (the gateway's: <fullname>-gateway-metrics)
    and scrape /metrics on a port of it that reaches the workload's metrics container port
    (the gateway's `metrics`, the operator's `http-metrics`); scrape annotations name those
    ports' numbers."""
    p = []
    values = r.values["metrics"]
    monitors = r.find("ServiceMonitor")
    if values["serviceMonitor"]["enabled"]:
        if len(monitors) != 2:
            p.append(f"expected 2 ServiceMonitors, got {len(monitors)}")
        for monitor in monitors:
            name = monitor["metadata"]["name"]
            selector = dig(monitor, "spec", "selector", "matchLabels", default={})
            selected = [s for s in r.find("Service")
                        if all(dig(s, "metadata", "labels", k) == v for k, v in selector.items())]
            if len(selected) != 1:
                p.append(f"ServiceMonitor {name} selects {len(selected)} Services, expected 1")
            ports = {q["name"]: q for s in selected for q in s["spec"]["ports"]}
            component = dig(monitor, "metadata", "labels", "app.kubernetes.io/component")
            # What each component's monitor must scrape: its workload's metrics container port.
            workload, want = {
                "gateway": (r.gateway, ("metrics", r.values["gateway"]["metrics"]["port"])),
                "operator": (r.operator, ("http-metrics", 8081)),
            }.get(component, (None, None))
            if want is None:
                p.append(f"ServiceMonitor {name}: unexpected component {component}")
                continue
            endpoints = dig(monitor, "spec", "endpoints", default=[])
            if len(endpoints) != 1:
                p.append(f"ServiceMonitor {name}: expected one endpoint, got {len(endpoints)}")
            for endpoint in endpoints:
                if endpoint.get("port") not in ports:
                    p.append(f"ServiceMonitor {name}: port {endpoint.get('port')} is not a port "
                             "of the selected Service")
                    continue
                if endpoint.get("path") != "/metrics":
                    p.append(f"ServiceMonitor {name}: path {endpoint.get('path')}, not /metrics")
                container_port = target_container_port(ports[endpoint["port"]], workload)
                got = None if container_port is None else \
                    (container_port.get("name"), container_port.get("containerPort"))
                if got != want:
                    p.append(f"ServiceMonitor {name}: port {endpoint['port']} reaches the "
                             f"container port {got}, expected {want}")
            if component == "gateway" and selected and \
                    selected[0] is not r.gateway_metrics_service:
                p.append(f"ServiceMonitor {name} must select {r.fullname}-gateway-metrics")
            for key, value in values["serviceMonitor"]["labels"].items():
                if dig(monitor, "metadata", "labels", key) != value:
                    p.append(f"ServiceMonitor {name} lacks label {key}")
    elif monitors:
        p.append("ServiceMonitors rendered although they are off")
    for deployment, port in ((r.gateway, str(r.values["gateway"]["metrics"]["port"])),
                             (r.operator, "8081")):
        if deployment is None:
            continue
        annotations = dig(deployment, "spec", "template", "metadata", "annotations", default={})
        if values["scrapeAnnotations"]:
            if annotations.get("prometheus.io/scrape") != "true" or \
                    annotations.get("prometheus.io/port") != port:
                p.append(f"{deployment['metadata']['name']}: prometheus.io annotations missing")
        elif "prometheus.io/scrape" in annotations:
            p.append(f"{deployment['metadata']['name']}: scrape annotations although off")
    return p


def test_hook(r: Rendered) -> list[str]:
    """`helm test`: the script's ConfigMap and the Job, both test hooks, wired to the gateway."""
    maps = [h for h in r.hooks if h["kind"] == "ConfigMap"]
    jobs = [h for h in r.hooks if h["kind"] == "Job"]
    if len(maps) != 1 or len(jobs) != 1:
        return ["expected the test hook to be one ConfigMap and one Job"]
    p = []
    for hook in (maps[0], jobs[0]):
        annotations = dig(hook, "metadata", "annotations", default={})
        # Replaced by the next `helm test`, deleted when the test passes, kept (for the Job's
        # logs) when it fails.
        if annotations.get("helm.sh/hook") != "test" or \
                annotations.get("helm.sh/hook-delete-policy") != HOOK_DELETE_POLICY:
            p.append(f"{hook['kind']} {hook['metadata']['name']}: not a test hook "
                     f"with hook-delete-policy {HOOK_DELETE_POLICY}")
    if dig(maps[0], "data", "helm-test.sh") != SCRIPT.read_text():
        p.append("the test ConfigMap does not hold files/helm-test.sh as it is")
    pod = jobs[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(container)
    tests = r.values["tests"]
    if container["image"] != f"{tests['image']['repository']}:{tests['image']['tag']}":
        p.append(f"test image is {container['image']}")
    service = dig(r.gateway_service, "metadata", "name", default="?")
    want_url = f"http://{service}.{r.namespace}.svc:{r.values['gateway']['service']['port']}"
    if dig(env, "GATEWAY_URL", "value") != want_url:
        p.append(f"test GATEWAY_URL is {dig(env, 'GATEWAY_URL', 'value')}, expected {want_url}")
    gateway_ref = dig(env_of(r.gateway_container), "UNDERSTUDY_ADMIN_TOKEN", "valueFrom",
                      "secretKeyRef")
    if dig(env, "ADMIN_TOKEN", "valueFrom", "secretKeyRef") != gateway_ref:
        p.append("test ADMIN_TOKEN must come from the gateway's admin token Secret")
    if dig(env, "MCP_CHECK", "value") != str(tests["mcp"]).lower():
        p.append("test MCP_CHECK does not follow tests.mcp")
    if maps[0]["metadata"]["name"] not in [dig(v, "configMap", "name") for v in pod["volumes"]]:
        p.append("the test Job does not mount the script's ConfigMap")
    return p


CHECKS = (names_and_labels, hardened_workloads, secret_references, services_match, gateway,
          gateway_metrics_private, operator, redis, checksums, rbac, admin_token, metrics, test_hook)


def problems(values: dict, objects: list[dict], hooks: list[dict], fullname: str,
             namespace: str) -> list[str]:
    rendered = Rendered(values, objects, hooks, fullname, namespace)
    return [problem for check in CHECKS for problem in check(rendered)]

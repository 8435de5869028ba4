#!/usr/bin/env python3
"""Checks of the Helm chart in charts/understudy, run by scripts/test.sh.

Run it with any Python 3: it creates `.venv-helm` at the repository root with a Python >= 3.12
(helm-sdkpy needs it; `python3.12` on PATH, else pyenv's), installs tests/chart/requirements.txt
there and re-runs itself inside.

What it checks, against two Kubernetes versions: the oldest the chart claims (the lower bound
of Chart.yaml's kubeVersion, 1.28) and the newest the pinned kubernetes-validate package ships
strict JSON schemas for (1.37 in 1.37.0). Nothing outside the repository is read.
  0. The strict validation can fail (a self-test, per version): a Deployment with an unknown
     field is refused, and so is one with a field that exists only in other versions (a preStop
     `sleep` action, 1.29+; a pod resource claim's `source`, removed in 1.31).
  1. charts/understudy/crds/understudy.yaml is byte-identical to crds/understudy.yaml, and every
     CRD in it is a valid apiextensions.k8s.io/v1 CustomResourceDefinition (strict, per version;
     the schemas' JSONSchemaPropsOr* types are made precise, so nested schemas are checked too).
  2. values.schema.json accepts values.yaml and every override file, and rejects every case in
     tests/chart/bad-values.yaml; Helm itself refuses every bad case too (its install action
     validates values against the schema, and runs the templates' `fail`s), and Helm's lint
     reports an error for each.
  3. For the default values, values-dev.yaml and each tests/chart/values/*.yaml: Helm's lint
     reports no error; for each version, the chart is rendered by Helm's own install action
     against a stand-in API server of that version (fake_apiserver.py: helm-sdkpy has no
     client-only dry run), and every object Helm sends, and every test hook, is validated against
     that version's schemas strictly: unknown fields are errors, as with `kubectl apply`, each
     reported with the object, the field and the version. ServiceMonitors (not Kubernetes kinds)
     are checked for a minimal shape. Then the chart's own promises: hardened pods,
     least-privilege RBAC, the environment of the operator and the gateway (its limits and its
     separate metrics listener included), the bundled Redis's password, Services and selectors
     that match, the gateway's metrics port on no Service but <fullname>-gateway-metrics and the
     ServiceMonitors reaching each metrics container port, checksum annotations that follow the
     credentials, the generated admin token and Redis password kept across upgrades (`lookup`),
     the test hook, a NOTES.txt example that pastes into a shell, and so on. Chart.yaml's
     kubeVersion must be exactly the range checked (">=1.28.0-0 <1.38.0-0"), and Helm must refuse
     a cluster just below and just above it.
  4. The gateway binary and files/helm-test.sh (the `helm test` script) for real. With
     UNDERSTUDY_BIN pointing at a gateway binary: its --help must name the variables the chart
     sets for gateway.limits and have values.yaml's limits as its defaults; for each values file
     it is started in embedded mode with the environment the chart gives its container (the
     listeners moved to free local ports), and must answer /metrics with 404 on the data-plane
     listener and with the exposition on the metrics listener, and log gateway.limits as its
     connection limits; helm-test.sh must pass against it (default values), and fail loudly
     against a wrong token and against a URL where nothing listens; against a stand-in gateway
     whose create request times out, it must still try to delete the tenant (accepting a 404).

It prints one line per check (those made against one Kubernetes version start with
"Kubernetes 1.N:"), a summary line per version and a total, and exits 1 when anything failed.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from promises import dig  # noqa: E402 - needs the path above; stdlib only
import promises  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "chart"
CHART = ROOT / "charts" / "understudy"
VENV = ROOT / ".venv-helm"
NAMESPACE = "understudy"


# ---------------------------------------------------------------------------------------------
# Bootstrap: a venv with Python >= 3.12, helm-sdkpy, jsonschema, kubernetes-validate and PyYAML.


def _python_at_least_312(candidate: str) -> bool:
    try:
        out = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "True"


def _find_python() -> str:
    """python3.12 on PATH, else pyenv's 3.12, else any other Python >= 3.12 we can find."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [shutil.which("python3.12")]
    candidates += sorted(glob.glob(str(pyenv / "3.12*" / "bin" / "python")), reverse=True)
    candidates += [sys.executable, shutil.which("python3.13"), shutil.which("python3.14")]
    candidates += sorted(glob.glob(str(pyenv / "3.1[3-9]*" / "bin" / "python")), reverse=True)
    for candidate in candidates:
        if candidate and _python_at_least_312(candidate):
            return candidate
    sys.exit("chart checks: no Python >= 3.12 found (tried python3.12 on PATH and "
             f"{pyenv}/3.12*); helm-sdkpy needs one")


def bootstrap() -> None:
    """Re-run this script inside .venv-helm, creating and filling it first if needed."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    if not python.exists() or not _python_at_least_312(str(python)):
        shutil.rmtree(VENV, ignore_errors=True)
        interpreter = _find_python()
        print(f"chart checks: creating .venv-helm with {interpreter}", flush=True)
        subprocess.run([interpreter, "-m", "venv", str(VENV)], check=True)
    requirements = HERE / "requirements.txt"
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        print("chart checks: installing tests/chart/requirements.txt into .venv-helm", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "-r", str(requirements)], check=True)
        stamp.write_text(digest)
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


# ---------------------------------------------------------------------------------------------
# Reporting.


class Report:
    """Prints one line per check. A check made against one Kubernetes version (`kube`) is named
    after it and counted for it too, so the summary has a line per version."""

    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []
        self.by_version: dict[str, list[int]] = {}  # "1.28" -> [passed, failed]

    def _count(self, kube: str | None, index: int) -> None:
        if kube is not None:
            self.by_version.setdefault(kube, [0, 0])[index] += 1

    def ok(self, name: str, detail: str = "", kube: str | None = None) -> None:
        self.passed += 1
        self._count(kube, 0)
        name = f"Kubernetes {kube}: {name}" if kube else name
        print(f"ok    {name}{f' ({detail})' if detail else ''}", flush=True)

    def fail(self, name: str, problems: list[str] | str, kube: str | None = None) -> None:
        problems = [problems] if isinstance(problems, str) else problems
        self._count(kube, 1)
        name = f"Kubernetes {kube}: {name}" if kube else name
        self.failures.append(name)
        print(f"FAIL  {name}", flush=True)
        for problem in problems[:40]:
            print(f"        - {problem}", flush=True)
        if len(problems) > 40:
            print(f"        … and {len(problems) - 40} more", flush=True)

    def expect(self, name: str, problems: list[str], detail: str = "",
               kube: str | None = None) -> None:
        if problems:
            self.fail(name, problems, kube)
        else:
            self.ok(name, detail, kube)


def deep_merge(base: dict, override: dict) -> dict:
    """Helm's merge of a values file over the defaults: maps merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# ---------------------------------------------------------------------------------------------
# Strict validation against the Kubernetes JSON schemas of the kubernetes-validate package.


def chart_kube_range() -> tuple[int | None, int | None]:
    """The minor versions of Chart.yaml's kubeVersion: ">=1.<lower>.0-0 <1.<upper>.0-0" gives
    (lower, upper), upper exclusive; (None, None) when it has another form."""
    text = (CHART / "Chart.yaml").read_text()
    match = re.search(r'^kubeVersion:\s*"?>=\s*1\.(\d+)\.0-0(?:\s+<\s*1\.(\d+)\.0-0)?"?\s*$',
                      text, re.M)
    if not match:
        return None, None
    return int(match[1]), int(match[2]) if match[2] else None


def shipped_schemas() -> dict[int, Path]:
    """Kubernetes minor version -> the folder of kubernetes-validate's strict schemas for it
    (kubernetes-json-schema/v1.<minor>.0-local-strict inside the installed package)."""
    import importlib.util

    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("chart checks: kubernetes-validate is not installed in .venv-helm "
                 "(tests/chart/requirements.txt)")
    root = Path(list(spec.submodule_search_locations)[0]) / "kubernetes-json-schema"
    found = {}
    for folder in root.iterdir():
        match = re.fullmatch(r"v1\.(\d+)\.0-local-strict", folder.name)
        if match and (folder / "_definitions.json").is_file():
            found[int(match[1])] = folder
    return found


def _field_path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


class KubeSchemas:
    """The strict JSON schemas of one Kubernetes minor version, as kubernetes-validate ships
    them: one file per kind (`<kind>-<group's first label>-<version>.json`, naming its
    x-kubernetes-group-version-kind) referring to `_definitions.json`. In these schemas every
    object type has `additionalProperties: false`, so an unknown field is an error, as with
    `kubectl apply` (fieldValidation=Strict)."""

    # Types the schemas leave unconstrained (only a description); made precise here, so a CRD's
    # openAPIV3Schema is checked at every depth, not only at its top.
    _PROPS = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps"
    _OVERRIDES = {
        _PROPS + "OrArray": {"type": "array", "items": {"$ref": f"#/$defs/{_PROPS}"}},
        _PROPS + "OrBool": {"type": "boolean"},
        _PROPS + "OrStringArray": {"type": "array", "items": {"type": "string"}},
    }

    def __init__(self, minor: int, folder: Path) -> None:
        self.minor = minor
        self.name = f"1.{minor}"
        self.git_version = f"v1.{minor}.0"  # what the stand-in API server reports
        self.folder = folder
        self._registry = None
        self._validators: dict[tuple[str, str], object] = {}

    def _definitions(self):
        from referencing import Registry, Resource

        if self._registry is None:
            document = json.loads((self.folder / "_definitions.json").read_text())
            definitions = document["$defs"]
            for key, other in self._OVERRIDES.items():
                if key in definitions:
                    definitions[key] = {"anyOf": [{"$ref": f"#/$defs/{self._PROPS}"}, other]}
            self._registry = Resource.from_contents(document) @ Registry()
        return self._registry

    def validator(self, api_version: str, kind: str):
        from jsonschema import Draft202012Validator

        key = (api_version, kind)
        if key not in self._validators:
            group, _, version = api_version.rpartition("/")
            label = f"{group.split('.')[0]}-" if group else ""
            path = self.folder / f"{kind.lower()}-{label}{version}.json"
            validator = None
            if path.is_file():
                schema = json.loads(path.read_text())
                wanted = {"group": group, "version": version, "kind": kind}
                if wanted in schema.get("x-kubernetes-group-version-kind", []):
                    validator = Draft202012Validator(schema, registry=self._definitions())
            self._validators[key] = validator
        return self._validators[key]

    def problems(self, obj: dict) -> list[str]:
        """What Kubernetes 1.<minor> would refuse in `obj`, each naming the field and the
        version; empty when it is valid."""
        from jsonschema.exceptions import best_match

        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        validator = self.validator(api_version, kind)
        if validator is None:
            return [f"no {api_version} {kind} in Kubernetes {self.name}"]
        out = []
        for error in validator.iter_errors(obj):
            while error.context:  # anyOf/oneOf: the branch that came closest
                error = best_match(error.context)
            where = list(error.absolute_path)
            if error.validator == "additionalProperties" and isinstance(error.instance, dict):
                known = error.schema.get("properties", {})
                for field in sorted(set(error.instance) - set(known)):
                    out.append((where + [field],
                                f"{_field_path(where + [field])}: unknown field in Kubernetes "
                                f"{self.name}"))
            else:
                out.append((where, f"{_field_path(where)}: {error.message[:300]} "
                                   f"(Kubernetes {self.name})"))
        return [message for _, message in sorted(out, key=lambda item: str(item[0]))]


# Objects that prove the validation can fail: a Deployment valid in every version, and changes
# to its pod spec with the versions that accept them. A field Kubernetes added or removed within
# the checked range must fail against the versions without it, naming the field and the version.
_SELF_TEST_BASE = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "self-test"},
    "spec": {"selector": {"matchLabels": {"app": "self-test"}},
             "template": {"metadata": {"labels": {"app": "self-test"}},
                          "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
}
_SELF_TEST_CASES = [
    # (what, the change to the pod spec, the field it adds, the minor versions that accept it)
    ("an unknown field",
     lambda pod: pod["containers"][0].update(imagePullPolicyy="Always"),
     "spec.template.spec.containers[0].imagePullPolicyy", lambda minor: False),
    ("a preStop sleep action (Kubernetes 1.29+)",
     lambda pod: pod["containers"][0].update(lifecycle={"preStop": {"sleep": {"seconds": 5}}}),
     "spec.template.spec.containers[0].lifecycle.preStop.sleep", lambda minor: minor >= 29),
    ("a pod resource claim's source (removed in Kubernetes 1.31)",
     lambda pod: pod.update(resourceClaims=[{"name": "gpu",
                                             "source": {"resourceClaimName": "gpu"}}]),
     "spec.template.spec.resourceClaims[0].source", lambda minor: minor <= 30),
]


def self_test_problems(kube: KubeSchemas) -> tuple[list[str], list[str]]:
    """Validates the self-test objects against one version: (problems, what it refused)."""
    problems, refused = [], []
    found = kube.problems(_SELF_TEST_BASE)
    if found:
        problems.append(f"the valid base Deployment is refused: {found}")
    for what, change, field, accepts in _SELF_TEST_CASES:
        obj = copy.deepcopy(_SELF_TEST_BASE)
        change(obj["spec"]["template"]["spec"])
        found = kube.problems(obj)
        if accepts(kube.minor):
            if found:
                problems.append(f"{what}: refused, but Kubernetes {kube.name} has it: {found}")
        elif any(field in p and f"Kubernetes {kube.name}" in p for p in found):
            refused.append(what)
        else:
            problems.append(f"{what}: not refused with a message naming {field} and "
                            f"Kubernetes {kube.name}; got {found}")
    return problems, refused


def service_monitor_problems(obj: dict) -> list[str]:
    """monitoring.coreos.com is not in the Kubernetes documents: a minimal expected shape."""
    problems = []
    allowed_top = {"apiVersion", "kind", "metadata", "spec"}
    problems += [f"unexpected top-level field {key}" for key in obj if key not in allowed_top]
    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append("apiVersion must be monitoring.coreos.com/v1")
    if not dig(obj, "metadata", "name"):
        problems.append("metadata.name is missing")
    spec = obj.get("spec") or {}
    allowed_spec = {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    problems += [f"spec.{key}: unexpected field" for key in spec if key not in allowed_spec]
    if not isinstance(dig(spec, "selector", "matchLabels"), dict):
        problems.append("spec.selector.matchLabels must be a map")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        problems.append("spec.endpoints must be a non-empty list")
    for i, endpoint in enumerate(endpoints or []):
        allowed = {"port", "path", "interval", "scrapeTimeout", "scheme"}
        problems += [f"spec.endpoints[{i}].{key}: unexpected field"
                     for key in endpoint if key not in allowed]
        if not isinstance(endpoint.get("port"), str):
            problems.append(f"spec.endpoints[{i}].port must be a port name")
        for key in ("interval", "scrapeTimeout"):
            if key in endpoint and not re.fullmatch(r"([0-9]+(ms|s|m|h))+", str(endpoint[key])):
                problems.append(f"spec.endpoints[{i}].{key}: not a Prometheus duration")
    return problems


# ---------------------------------------------------------------------------------------------
# Helm: lint and render (install against the stand-in API server).


def helm_lint(values: dict) -> list[dict]:
    """helm lint on a copy of the chart whose values.yaml is `values` (the bindings' Lint takes
    no values). Returns Helm's messages: {Severity: 1 info | 2 warning | 3 error, Path, Err}."""
    import asyncio

    import helm_sdkpy
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        chart = Path(tmp) / "understudy"
        shutil.copytree(CHART, chart)
        (chart / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
        result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(str(chart)))
    return result.get("Messages") or []


class RenderError(Exception):
    pass


def helm_render(values: dict | None, release: str = "understudy", existing: dict | None = None,
                git_version: str | None = None):
    """Runs Helm's install action against the stand-in API server, which reports `git_version`
    (default: the oldest version of the chart's kubeVersion). Returns (release, objects Helm
    sent to the API server, test-hook objects)."""
    import asyncio

    import helm_sdkpy
    import yaml
    from fake_apiserver import FakeApiServer

    git_version = git_version or f"v1.{chart_kube_range()[0]}.0"
    with FakeApiServer(git_version=git_version, existing=existing) as server:
        config = helm_sdkpy.Configuration(namespace=NAMESPACE, kubeconfig=server.kubeconfig)
        try:
            result = asyncio.run(helm_sdkpy.Install(config).run(
                release, str(CHART), values=values, wait=False, timeout=120))
        except helm_sdkpy.HelmError as error:
            raise RenderError(str(error)) from None
        created = list(server.created)
    hooks = []
    for hook in result.get("hooks") or []:
        hooks += [doc for doc in yaml.safe_load_all(hook["manifest"]) if doc]
    return result, created, hooks


# ---------------------------------------------------------------------------------------------
# The checks.


def check_crds(report: Report, kubes: list[KubeSchemas]) -> None:
    import yaml

    source, copy_ = ROOT / "crds" / "understudy.yaml", CHART / "crds" / "understudy.yaml"
    if source.read_bytes() == copy_.read_bytes():
        report.ok("charts/understudy/crds/understudy.yaml is identical to crds/understudy.yaml")
    else:
        report.fail("charts/understudy/crds/understudy.yaml is identical to crds/understudy.yaml",
                    "they differ: cp crds/understudy.yaml charts/understudy/crds/understudy.yaml")
    documents = [d for d in yaml.safe_load_all(copy_.read_text()) if d]
    problems = []
    for crd in documents:
        name = dig(crd, "metadata", "name", default="?")
        want = f"{dig(crd, 'spec', 'names', 'plural')}.{dig(crd, 'spec', 'group')}"
        if name != want:
            problems.append(f"{name}: metadata.name must be {want}")
    kinds = sorted(dig(crd, "spec", "names", "kind") for crd in documents)
    if kinds != ["ChaosProfile", "Scenario", "Tenant"]:
        problems.append(f"expected the Tenant, Scenario and ChaosProfile CRDs, found {kinds}")
    report.expect("the CRDs are Tenant, Scenario and ChaosProfile, named <plural>.<group>",
                  problems)
    for kube in kubes:
        problems = [f"CustomResourceDefinition {dig(crd, 'metadata', 'name', default='?')}: "
                    f"{problem}" for crd in documents for problem in kube.problems(crd)]
        report.expect("the CRDs are valid apiextensions.k8s.io/v1 CustomResourceDefinitions "
                      "(strict)", problems, f"{len(documents)} CRDs", kube=kube.name)


def check_schemas_can_fail(report: Report, kubes: list[KubeSchemas]) -> None:
    """The self-test: the strict validation refuses an unknown field, and a field that exists in
    other Kubernetes versions only."""
    for kube in kubes:
        problems, refused = self_test_problems(kube)
        report.expect("the strict validation refuses what this version lacks (self-test)",
                      problems, "refused: " + "; ".join(refused), kube=kube.name)


def check_values_schema(report: Report, defaults: dict, value_sets: dict, bad_cases: list) -> None:
    from jsonschema import Draft7Validator

    schema = json.loads((CHART / "values.schema.json").read_text())
    try:
        Draft7Validator.check_schema(schema)
    except Exception as error:  # noqa: BLE001 - report any schema error
        report.fail("values.schema.json is a valid draft-07 schema", str(error)[:500])
        return
    validator = Draft7Validator(schema)
    for name, values in value_sets.items():
        errors = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                  for e in validator.iter_errors(values)]
        report.expect(f"values.schema.json accepts {name}", errors)
    for case in bad_cases:
        merged = deep_merge(defaults, case["values"])
        errors = list(validator.iter_errors(merged))
        name = f"values.schema.json rejects: {case['name']}"
        if case["by"] == "schema":
            if errors:
                report.ok(name, errors[0].message[:100])
            else:
                report.fail(name, f"accepted {case['values']}")
        elif errors:
            report.fail(f"values.schema.json accepts (the templates refuse it): {case['name']}",
                        [e.message for e in errors])


def documented_values(text: str) -> list[str]:
    """The dotted paths of values.yaml that carry a `# --` comment (helm-docs' convention)."""
    stack: list[tuple[int, str]] = []
    documented, pending = [], False
    for line in text.splitlines():
        if re.match(r"^\s*# -- ", line):
            pending = True
            continue
        if re.match(r"^\s*#", line) or not line.strip():
            pending = pending and bool(line.strip())
            continue
        match = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent = len(match[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match[2]))
        if pending:
            documented.append(".".join(key for _, key in stack))
        pending = False
    return documented


def _leaves(values: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        out += _leaves(value, f"{path}.") if isinstance(value, dict) and value else [path]
    return out


def check_values_documented(report: Report, defaults: dict) -> None:
    """Every value in values.yaml has a `# --` comment, and docs/helm.md has a row for each."""
    documented = documented_values((CHART / "values.yaml").read_text())
    problems = [f"values.yaml: {leaf} has no `# --` comment (nor has a parent)"
                for leaf in _leaves(defaults)
                if not any(leaf == d or leaf.startswith(d + ".") for d in documented)]
    rows = re.findall(r"^\| `([A-Za-z0-9.]+)` \|", (ROOT / "docs" / "helm.md").read_text(), re.M)
    problems += [f"docs/helm.md: no row for {path}" for path in documented if path not in rows]
    problems += [f"docs/helm.md: a row for {path}, which values.yaml does not document"
                 for path in rows if path not in documented]
    report.expect("every value is commented in values.yaml and listed in docs/helm.md", problems,
                  f"{len(documented)} values")


def check_bad_values_in_helm(report: Report, defaults: dict, bad_cases: list) -> None:
    """Helm refuses every bad case at install. Helm's lint must report an error for the schema
    cases; it cannot for the template cases, because lint renders in lint mode, where `fail`
    and `required` only log."""
    for case in bad_cases:
        try:
            helm_render(case["values"])
        except RenderError as error:
            message = " ".join(str(error).split())
            if case.get("expect") and case["expect"] not in message:
                report.fail(f"Helm refuses: {case['name']}",
                            f"refused, but the message lacks {case['expect']!r}: {message[:400]}")
            else:
                for marker in (" understudy: - ", "error calling fail: "):
                    message = message.split(marker, 1)[-1]
                report.ok(f"Helm refuses: {case['name']}", message[:140])
        else:
            report.fail(f"Helm refuses: {case['name']}", f"Helm installed {case['values']}")
            continue
        if case["by"] != "schema":
            continue
        messages = helm_lint(deep_merge(defaults, case["values"]))
        errors = [m for m in messages if m.get("Severity", 0) >= 3]
        if errors:
            report.ok(f"helm lint reports an error for: {case['name']}",
                      ", ".join(sorted({m.get('Path', '?') for m in errors})))
        else:
            report.fail(f"helm lint reports an error for: {case['name']}",
                        f"lint messages: {messages}")


def check_value_set(report: Report, kubes: list[KubeSchemas], name: str, override: dict,
                    defaults: dict, release: str = "understudy",
                    lint: bool = True) -> tuple[dict, dict | None]:
    """Lints the values once, then for each Kubernetes version renders them for a cluster of
    that version and validates every object Helm sends, and the test hooks, against it.
    Returns the merged values and the gateway container of the first rendering (None when it
    failed)."""
    import yaml

    values = deep_merge(defaults, override)
    if lint:
        messages = helm_lint(values)
        errors = [m for m in messages if m.get("Severity", 0) >= 3]
        report.expect(
            f"helm lint {name}",
            [f"lint error in {m.get('Path')} (the bindings drop the text; the render below "
             "shows it)" for m in errors],
            f"{len(messages)} message(s), none an error",
        )
    fullname = values["fullnameOverride"] or (
        release if "understudy" in release else f"{release}-understudy")
    gateway_container = None
    for index, kube in enumerate(kubes):
        try:
            result, created, hooks = helm_render(override or None, release=release,
                                                 git_version=kube.git_version)
        except RenderError as error:
            report.fail(f"render {name} with Helm's install action", str(error)[:2000],
                        kube=kube.name)
            continue
        manifest = [d for d in yaml.safe_load_all(result.get("manifest") or "") if d]
        chart_objects = [o for o in created if o.get("kind") != "CustomResourceDefinition"]
        problems = []
        if len(chart_objects) != len(manifest):
            problems.append(f"Helm sent {len(chart_objects)} objects but rendered {len(manifest)}")
        if len([o for o in created if o.get("kind") == "CustomResourceDefinition"]) != 3:
            problems.append("Helm did not install the 3 CRDs from crds/")
        notes = dig(result, "info", "notes", default="")
        if "helm test" not in notes:
            problems.append("NOTES.txt does not mention `helm test`")
        report.expect(f"render {name} with Helm's install action", problems,
                      f"{len(chart_objects)} objects, {len(hooks)} test hooks", kube=kube.name)

        objects = chart_objects + hooks
        problems = []
        for obj in objects:
            if obj.get("kind") != "ServiceMonitor":  # not a Kubernetes kind: checked below
                what = f"{obj.get('kind')} {dig(obj, 'metadata', 'name')}"
                problems += [f"{what}: {problem}" for problem in kube.problems(obj)]
        kinds = sorted({o["kind"] for o in objects if o["kind"] != "ServiceMonitor"})
        report.expect(f"{name}: every object is valid (strict)", problems, ", ".join(kinds),
                      kube=kube.name)
        report.expect(f"{name}: the chart's promises hold (tests/chart/promises.py)",
                      promises.problems(values, chart_objects, hooks, fullname, NAMESPACE),
                      kube=kube.name)
        if index:
            continue
        gateway_container = promises.Rendered(values, chart_objects, hooks, fullname,
                                              NAMESPACE).gateway_container or None
        report.expect(f"{name}: the NOTES.txt example pastes into a shell",
                      notes_example_problems(notes))
        monitors = [o for o in objects if o.get("kind") == "ServiceMonitor"]
        if monitors:
            report.expect(f"{name}: the ServiceMonitors have the expected shape",
                          [f"ServiceMonitor {dig(o, 'metadata', 'name')}: {problem}"
                           for o in monitors for problem in service_monitor_problems(o)],
                          f"{len(monitors)}")
    return values, gateway_container


def crd_schema_problems(documents: list[dict]) -> list[str]:
    """Custom resources checked against the openAPIV3Schema of their CRD in crds/ (the
    structural schema only: CEL rules are tested with the CRDs themselves)."""
    import yaml
    from jsonschema import Draft202012Validator

    crds = [d for d in yaml.safe_load_all((CHART / "crds" / "understudy.yaml").read_text()) if d]
    schemas = {}
    for crd in crds:
        for version in dig(crd, "spec", "versions", default=[]):
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = dig(version, "schema", "openAPIV3Schema", default={})
    problems = []
    for document in documents:
        key = (document.get("apiVersion"), document.get("kind"))
        if key not in schemas:
            problems.append(f"{key[1]}: no CRD serves {key[0]}")
            continue
        body = {k: v for k, v in document.items() if k != "metadata"}
        for error in Draft202012Validator(schemas[key]).iter_errors(body):
            where = ".".join(str(part) for part in error.absolute_path) or "(root)"
            problems.append(f"{key[1]} {where}: {error.message[:200]}")
    return problems


def notes_example_problems(notes: str) -> list[str]:
    """The heredoc in NOTES.txt, pasted into sh as it is printed (with kubectl replaced by a
    function that keeps what it is given), must hand kubectl the Tenant and the Scenario."""
    import yaml

    lines = notes.splitlines()
    starts = [i for i, line in enumerate(lines) if "<<'YAML'" in line]
    if len(starts) != 1:
        return [f"expected one <<'YAML' heredoc in NOTES.txt, found {len(starts)}"]
    start = starts[0]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "YAML"), None)
    if end is None:
        return ["the heredoc in NOTES.txt has no YAML terminator"]
    if lines[end] != "YAML":
        return [f"the heredoc terminator is indented ({lines[end]!r}): the shell never ends it"]
    block = "\n".join(lines[start:end + 1])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "applied.yaml"
        script = f'kubectl() {{ printf "%s\\n" "$*" > "{tmp}/args"; cat > "{out}"; }}\n{block}\n'
        run = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
        if run.returncode != 0:
            return [f"sh failed on the pasted example: {run.stderr.strip()[:300]}"]
        args = (Path(tmp) / "args").read_text().split() if (Path(tmp) / "args").exists() else []
        try:
            documents = [d for d in yaml.safe_load_all(out.read_text()) if d]
        except (OSError, yaml.YAMLError) as error:
            return [f"kubectl would get no valid YAML: {error}"]
    problems = []
    kinds = [d.get("kind") for d in documents]
    if kinds != ["Tenant", "Scenario"]:
        problems.append(f"kubectl would get {kinds}, expected a Tenant and a Scenario")
    if any(d.get("apiVersion") != "understudy.dev/v1alpha1" for d in documents):
        problems.append("the example's objects are not understudy.dev/v1alpha1")
    problems += crd_schema_problems(documents)
    if not args or args[0] != "apply" or "-n" not in args or args[-2:] != ["-f", "-"]:
        problems.append(f"kubectl is called as `kubectl {' '.join(args)}`")
    return problems


def check_lookup(report: Report) -> None:
    import base64

    kept = {  # Secret name -> (key, the value an earlier install generated)
        "understudy-admin": ("admin-token", "kept-across-upgrades-0123456789abcdefXYZ"),
        "understudy-redis-auth": ("redis-password", "keptRedisPassword0123456789abcdefghijklmnopqrstuv"),
    }
    existing = {
        (NAMESPACE, "secrets", name): {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": name, "namespace": NAMESPACE,
                # What Helm put on it at install: without these it refuses to adopt the Secret.
                "labels": {"app.kubernetes.io/managed-by": "Helm"},
                "annotations": {"meta.helm.sh/release-name": "understudy",
                                "meta.helm.sh/release-namespace": NAMESPACE},
            },
            "data": {key: base64.b64encode(value.encode()).decode()},
        }
        for name, (key, value) in kept.items()
    }
    import yaml

    problems = []
    try:
        result, _, _ = helm_render(None, existing=existing)
        manifest = [o for o in yaml.safe_load_all(result["manifest"]) if o]
        for name, (key, value) in kept.items():
            secret = next((o for o in manifest if o["kind"] == "Secret"
                           and o["metadata"]["name"] == name), None)
            got = promises.secret_value(secret, key)
            if got != value:
                problems.append(f"Secret {name} {key} changed to {got!r}")
        # The checksums follow the kept values, so an upgrade that changes nothing rolls nothing.
        admin_sum = promises.sha256(kept["understudy-admin"][1])
        redis_sum = promises.sha256(kept["understudy-redis-auth"][1])
        want = {
            ("Deployment", "understudy-gateway"): {"checksum/admin-token": admin_sum,
                                                   "checksum/redis-password": redis_sum},
            ("Deployment", "understudy-operator"): {"checksum/redis-password": redis_sum},
            ("StatefulSet", "understudy-redis"): {"checksum/redis-password": redis_sum},
        }
        for (kind, name), sums in want.items():
            obj = next((o for o in manifest if o["kind"] == kind
                        and o["metadata"]["name"] == name), {})
            annotations = dig(obj, "spec", "template", "metadata", "annotations", default={})
            got = {k: v for k, v in annotations.items() if k.startswith("checksum/")}
            if got != sums:
                problems.append(f"{kind} {name}: checksum annotations {got}, expected {sums}")
    except RenderError as error:
        problems = [f"render failed: {error}"]
    report.expect("an upgrade keeps the generated admin token and Redis password (lookup of the "
                  "existing Secrets), and the pods' checksums follow them", problems)


def check_kube_version(report: Report, lower: int, upper: int | None, newest: int) -> None:
    """Chart.yaml's kubeVersion is the range tested here, and Helm holds clusters to it."""
    want = f">=1.{lower}.0-0 <1.{newest + 1}.0-0"
    report.expect(f"Chart.yaml's kubeVersion is the range checked here: {want}",
                  [] if upper == newest + 1 else
                  [f"its upper bound must be <1.{newest + 1}.0-0: Kubernetes 1.{newest} is the "
                   "newest version tests/chart/requirements.txt's kubernetes-validate ships"])
    for minor in (lower - 1, newest + 1):
        name = f"kubeVersion: Helm refuses a v1.{minor} cluster"
        try:
            helm_render(None, git_version=f"v1.{minor}.0")
            report.fail(name, f"Helm installed on v1.{minor}.0")
        except RenderError as error:
            report.ok(name, str(error)[:100])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_script(env_extra: dict) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("UNDERSTUDY_")}
    env.update(env_extra)
    return subprocess.run(["sh", str(CHART / "files" / "helm-test.sh")], env=env,
                          capture_output=True, text=True, timeout=180)


class _StandInGateway:
    """Answers GET /readyz with 200, lets POST /public/tenants time out (it answers 201 only
    after `stall` seconds, when the script's curl has given up), and answers DELETE of a tenant
    with `delete_status`; records the requests."""

    def __init__(self, stall: float, delete_status: int) -> None:
        self.requests: list[tuple[str, str]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, code: int, body: str) -> None:
                data = body.encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client has gone

            def do_GET(self):
                stand_in.requests.append(("GET", self.path))
                self._answer(200 if self.path == "/readyz" else 404, "{}")

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.requests.append(("POST", self.path))
                time.sleep(stall)
                self._answer(201, '{"tenant_id":"?"}')

            def do_DELETE(self):
                stand_in.requests.append(("DELETE", self.path))
                self._answer(delete_status, "{}")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def check_helm_test_ambiguous_create(report: Report) -> None:
    """When the create request gets no answer (a timeout), the tenant may exist all the same:
    the script must still try to delete it, and take a 404 as "nothing to delete"."""
    for delete_status, want in ((200, "ok: deleted the temporary tenant"),
                                (404, "ok: no temporary tenant to delete")):
        stand_in = _StandInGateway(stall=3, delete_status=delete_status)
        try:
            run = _run_script({"GATEWAY_URL": stand_in.url, "ADMIN_TOKEN": "x" * 32,
                               "REQUEST_TIMEOUT": "1"})
        finally:
            stand_in.close()
        output = run.stdout + run.stderr
        deletes = [path for method, path in stand_in.requests if method == "DELETE"]
        problems = []
        if run.returncode == 0 or "FAIL: POST /public/tenants: expected HTTP 201, received " \
                "HTTP 000" not in output:
            problems.append(f"the timed-out create must fail the script; exit {run.returncode}")
        if len(deletes) != 1 or not deletes[0].startswith("/public/tenants/helm_test_"):
            problems.append(f"expected one DELETE of the temporary tenant, got {deletes}")
        if want not in output or "FAIL: DELETE" in output:
            problems.append(f"a DELETE answered {delete_status} must be taken as cleaned up")
        if problems:
            problems.append(f"output: {output[-1200:]}")
        report.expect(f"helm-test.sh deletes the tenant after a create that timed out "
                      f"(DELETE answers {delete_status})", problems)


def check_helm_test_script(report: Report, defaults: dict,
                           gateways: dict[str, tuple[dict, dict | None]]) -> None:
    """helm-test.sh on its own and against real gateways; and, with UNDERSTUDY_BIN, the
    gateway run with the environment each value set gives it (`gateways`: name ->
    (merged values, the rendered gateway container))."""
    script = CHART / "files" / "helm-test.sh"
    syntax = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    report.expect("files/helm-test.sh is valid POSIX sh (sh -n)",
                  [syntax.stderr.strip()] if syntax.returncode else [])

    dead = f"http://127.0.0.1:{_free_port()}"
    run = _run_script({"GATEWAY_URL": dead, "ADMIN_TOKEN": "x" * 32, "READY_ATTEMPTS": "2"})
    output = run.stdout + run.stderr
    report.expect(
        "helm-test.sh fails loudly where nothing listens",
        [] if run.returncode != 0 and "FAIL: GET /readyz" in output and "received HTTP 000" in output
        else [f"exit {run.returncode}, output: {output[-1500:]}"],
        f"exit {run.returncode}",
    )
    check_helm_test_ambiguous_create(report)

    binary = os.environ.get("UNDERSTUDY_BIN")
    if not binary:
        print("skip  helm-test.sh and the chart's environment against a real gateway: "
              "UNDERSTUDY_BIN is not set (scripts/test.sh sets it)", flush=True)
        return
    if not os.access(binary, os.X_OK):
        report.fail("helm-test.sh against a real gateway", f"UNDERSTUDY_BIN={binary} is not executable")
        return
    report.expect("values.yaml's gateway.limits are the gateway's own defaults, under the "
                  "variables the chart sets (understudy-gateway --help)",
                  gateway_help_problems(binary, defaults), ", ".join(
                      f"{key} {value}" for key, value in defaults["gateway"]["limits"].items()))
    for name, (values, container) in gateways.items():
        if not container:
            continue  # its render failed, reported above
        with ChartGateway(binary, container) as gateway:
            if not gateway.ready:
                report.fail(f"{name}: the gateway starts with the chart's environment",
                            f"it did not become ready: {gateway.log()[-1500:]}")
                continue
            report.expect(f"{name}: the gateway starts with the chart's environment: /metrics "
                          "only on the metrics port, the limits in force",
                          chart_gateway_problems(gateway, values),
                          f"left out: {', '.join(gateway.skipped)}")
            if name == "values.yaml (defaults)":
                check_helm_test_against(report, gateway)


def check_helm_test_against(report: Report, gateway: "ChartGateway") -> None:
    """helm-test.sh against a real gateway (embedded mode) run with the chart's environment."""
    url, token = gateway.url, gateway.token
    run = _run_script({"GATEWAY_URL": url, "ADMIN_TOKEN": token, "MCP_CHECK": "false"})
    output = run.stdout + run.stderr
    report.expect("helm-test.sh passes against a real gateway (embedded mode, the chart's "
                  "environment)",
                  [] if run.returncode == 0 and "PASS" in output
                  else [f"exit {run.returncode}, output:", *output.splitlines()[-30:]],
                  "; ".join(line for line in output.splitlines() if line.startswith("ok:"))[:300])
    request = urllib.request.Request(f"{url}/public/tenants",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        left = answer.read().decode()
    report.expect("helm-test.sh deletes its temporary tenant",
                  [f"tenants left: {left[:500]}"] if "helm_test_" in left else [])
    run = _run_script({"GATEWAY_URL": url, "ADMIN_TOKEN": "wrong-token-0123456789abcdef"})
    output = run.stdout + run.stderr
    report.expect(
        "helm-test.sh fails loudly with a wrong admin token",
        [] if run.returncode != 0 and "FAIL: POST /public/tenants: expected HTTP 201" in output
        else [f"exit {run.returncode}, output: {output[-1500:]}"],
        next((line for line in output.splitlines() if line.startswith("FAIL")), "")[:100],
    )


# gateway.limits.<key> -> the gateway's flag (its variable is promises.GATEWAY_LIMITS_ENV[key]).
GATEWAY_LIMIT_FLAGS = {
    "headerTimeout": "--header-timeout",
    "bodyTimeout": "--body-timeout",
    "maxConnections": "--max-connections",
    "maxAnswerBytes": "--max-answer-bytes",
    "maxStreamEvents": "--max-stream-events",
}


def gateway_help_problems(binary: str, defaults: dict) -> list[str]:
    """The gateway's --help names, for each flag, its variable ([env: NAME=]) and its default
    ([default: …]): the chart must set those variables, and its defaults must be the gateway's
    (so that leaving a value alone behaves as the gateway documents)."""
    run = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60)
    options = {}  # flag -> (variable, default)
    for block in re.split(r"\n(?= {2,6}(?:-\w, )?--[a-z])", run.stdout):
        flag = re.match(r"\s*(?:-\w, )?(--[a-z][-a-z]*)", block)
        if flag:
            variable = re.search(r"\[env: ([A-Z0-9_]+)", block)
            default = re.search(r"\[default: ([^\]]*)\]", block)
            options[flag[1]] = (variable and variable[1], default and default[1])
    problems = [] if run.returncode == 0 else [f"--help exited {run.returncode}: {run.stderr[:300]}"]
    for key, flag in GATEWAY_LIMIT_FLAGS.items():
        if flag not in options:
            problems.append(f"the gateway has no {flag}")
            continue
        variable, default = options[flag]
        if variable != promises.GATEWAY_LIMITS_ENV[key]:
            problems.append(f"{flag} reads {variable}, but the chart sets "
                            f"{promises.GATEWAY_LIMITS_ENV[key]}")
        value = str(defaults["gateway"]["limits"][key])
        if default != value:
            problems.append(f"values.yaml gateway.limits.{key} is {value}, the gateway's default "
                            f"for {flag} is {default}")
    if options.get("--metrics-listen", (None,))[0] != "UNDERSTUDY_METRICS_LISTEN":
        problems.append("the gateway has no --metrics-listen read from UNDERSTUDY_METRICS_LISTEN")
    return problems


def _seconds(text: str, units: dict[str, float]) -> float | None:
    """A duration such as 1m30s or 1.5s in seconds, with the given units; None if unreadable."""
    pattern = "|".join(sorted(map(re.escape, units), key=len, reverse=True))
    parts = re.findall(rf"([0-9]+(?:\.[0-9]+)?)({pattern})", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * units[unit] for number, unit in parts)


HUMANTIME_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}  # the chart's durations
RUST_DEBUG_UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 0.001, "s": 1}  # Duration's {:?}


class ChartGateway:
    """The gateway binary run with the environment the chart gives its container: every plain
    `value` as it is, except that the listeners move to free ports on 127.0.0.1 (the chart binds
    0.0.0.0:8080 and 0.0.0.0:<gateway.metrics.port>), the admin token (a Secret reference in the
    chart) is a test token, the log format is json (for the check to read), the drain grace 0s
    (to stop at once), and UNDERSTUDY_REDIS_URL (no Redis here: embedded mode), Secret
    references and OTEL_EXPORTER_OTLP_ENDPOINT (no collector here) are left out."""

    token = "chart-check-admin-token-0123456789"

    def __init__(self, binary: str, container: dict) -> None:
        self.binary = binary
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERSTUDY_")}
        self.skipped = []
        for entry in container.get("env") or []:
            name = entry["name"]
            if "value" not in entry or name in ("UNDERSTUDY_REDIS_URL",
                                                "OTEL_EXPORTER_OTLP_ENDPOINT"):
                self.skipped.append(name)
                continue
            self.env[name] = str(entry["value"])
        self.chart_env = {entry["name"]: entry.get("value") for entry in container.get("env") or []}
        port, metrics_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}"
        self.env.update({"UNDERSTUDY_LISTEN": f"127.0.0.1:{port}",
                         "UNDERSTUDY_ADMIN_TOKEN": self.token,
                         "UNDERSTUDY_LOG_FORMAT": "json",
                         "UNDERSTUDY_DRAIN_GRACE": "0s"})
        if "UNDERSTUDY_METRICS_LISTEN" in self.env:  # moved only when the chart sets it
            self.env["UNDERSTUDY_METRICS_LISTEN"] = f"127.0.0.1:{metrics_port}"
        self.ready = False

    def __enter__(self) -> "ChartGateway":
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen([self.binary], env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            if get(f"{self.url}/readyz")[0] == 200:
                self.ready = True
                break
            time.sleep(0.2)
        return self

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def get(url: str) -> tuple[int, str]:
    """GET url: (status, body); status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError:
        return 0, ""


def chart_gateway_problems(gateway: ChartGateway, values: dict) -> list[str]:
    """/metrics answers 404 on the data-plane listener and the exposition on the metrics
    listener; the connection limits the gateway logs at start are gateway.limits."""
    problems = []
    status, body = get(f"{gateway.url}/metrics")
    if status != 404:
        problems.append(f"GET /metrics on the data-plane listener answered {status}, expected "
                        f"404 (UNDERSTUDY_METRICS_LISTEN={gateway.chart_env.get('UNDERSTUDY_METRICS_LISTEN')!r})")
    status, body = get(f"{gateway.metrics_url}/metrics")
    if status != 200 or "# TYPE understudy_" not in body:
        problems.append(f"GET /metrics on the metrics listener answered {status}: {body[:200]!r}")
    limits = values["gateway"]["limits"]
    logged = None
    for line in gateway.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("message") == "connection limits":
            logged = record
    if logged is None:
        return problems + ["the gateway logged no \"connection limits\" line"]
    for key, field in (("headerTimeout", "header_timeout"), ("bodyTimeout", "body_timeout")):
        want = _seconds(str(limits[key]), HUMANTIME_UNITS)
        got = _seconds(str(logged.get(field)), RUST_DEBUG_UNITS)
        if want is None or got is None or abs(want - got) > 1e-6:
            problems.append(f"the gateway runs with {field} {logged.get(field)}, expected "
                            f"gateway.limits.{key} {limits[key]}")
    # The gateway keeps the cap below its open-file limit, so a lower cap is no error then.
    cap = logged.get("max_connections")
    if cap != limits["maxConnections"] and not (
            isinstance(cap, int) and cap < limits["maxConnections"]
            and logged.get("open_files") not in (None, "None")):
        problems.append(f"the gateway runs with max_connections {cap}, expected "
                        f"gateway.limits.maxConnections {limits['maxConnections']}")
    return problems


def main() -> int:
    bootstrap()
    import yaml

    # Helm writes its cache and config under these; keep them out of $HOME.
    helm_home = tempfile.mkdtemp(prefix="understudy-chart-check-")
    for variable in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        os.environ[variable] = os.path.join(helm_home, variable.lower())

    lower, upper = chart_kube_range()
    if lower is None:
        print('chart checks: Chart.yaml\'s kubeVersion is not of the form ">=1.N.0-0 <1.M.0-0"',
              file=sys.stderr)
        return 1
    shipped = shipped_schemas()
    if lower not in shipped:
        print(f"chart checks: kubernetes-validate has no schemas for Kubernetes 1.{lower}, the "
              f"oldest version Chart.yaml claims (it has 1.{min(shipped)} to 1.{max(shipped)})",
              file=sys.stderr)
        return 1
    newest = max(shipped)
    kubes = [KubeSchemas(minor, shipped[minor]) for minor in sorted({lower, newest})]
    from importlib.metadata import version

    source = f"the strict schemas of kubernetes-validate {version('kubernetes-validate')}"
    print(f"chart checks: Kubernetes {' and '.join(k.name for k in kubes)} ({source})",
          flush=True)
    report = Report()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    overrides = {"values.yaml (defaults)": {},
                 "values-dev.yaml": yaml.safe_load((CHART / "values-dev.yaml").read_text())}
    for path in sorted((HERE / "values").glob("*.yaml")):
        overrides[f"values/{path.name}"] = yaml.safe_load(path.read_text()) or {}
    bad_cases = yaml.safe_load((HERE / "bad-values.yaml").read_text())

    try:
        check_schemas_can_fail(report, kubes)
        check_crds(report, kubes)
        check_values_documented(report, defaults)
        check_values_schema(report, defaults,
                            {name: deep_merge(defaults, o) for name, o in overrides.items()},
                            bad_cases)
        gateways = {name: check_value_set(report, kubes, name, override, defaults)
                    for name, override in overrides.items()}
        check_value_set(report, kubes, "values.yaml as release 'demo'", {}, defaults,
                        release="demo", lint=False)
        check_lookup(report)
        check_kube_version(report, lower, upper, newest)
        check_bad_values_in_helm(report, defaults, bad_cases)
        check_helm_test_script(report, defaults, gateways)
    finally:
        shutil.rmtree(helm_home, ignore_errors=True)

    print(flush=True)
    for kube in kubes:
        passed, failed = report.by_version.get(kube.name, [0, 0])
        print(f"Kubernetes {kube.name}: {passed} passed, {failed} failed ({source})", flush=True)
    print(f"chart: {report.passed} passed, {len(report.failures)} failed", flush=True)
    if report.failures:
        print("failed:\n  " + "\n  ".join(report.failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

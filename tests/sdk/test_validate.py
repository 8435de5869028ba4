"""`understudy-gateway validate DIR` and start-up refusal of invalid manifests (SPEC §1)."""

from __future__ import annotations

import subprocess

from conftest import INVALID_MANIFESTS, MANIFESTS, clean_env, free_port, gateway_bin


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [gateway_bin(), *args], capture_output=True, text=True, timeout=timeout, env=clean_env()
    )


def test_validate_valid_dir():
    r = run("validate", str(MANIFESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout


def test_validate_invalid_dir_lists_every_problem():
    r = run("validate", str(INVALID_MANIFESTS))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    problems = [line for line in out.splitlines() if "broken.yaml" in line]
    assert any("spec.probability" in line and "document 2" in line for line in problems), out
    assert any("spec.tenantRef" in line and "document 3" in line for line in problems), out


def test_validate_broken_yaml(tmp_path):
    (tmp_path / "a.yaml").write_text("apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {name: x\n")
    r = run("validate", str(tmp_path))
    assert r.returncode == 1
    assert "a.yaml" in r.stdout + r.stderr


def test_validate_unknown_kind_and_wrong_type(tmp_path):
    (tmp_path / "b.yml").write_text(
        "apiVersion: understudy.dev/v1alpha1\nkind: Gizmo\nmetadata: {name: g}\n---\n"
        "apiVersion: understudy.dev/v1alpha1\nkind: ChaosProfile\nmetadata: {name: c}\n"
        "spec: {tenantRef: t, profile: server_error, statusCode: 418}\n"
    )
    r = run("validate", str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 1
    assert "b.yml" in out and "kind" in out and "spec.statusCode" in out


def test_serve_refuses_invalid_manifests():
    r = run("--listen", f"127.0.0.1:{free_port()}", "--manifests", str(INVALID_MANIFESTS))
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "broken.yaml" in out and "spec.probability" in out and "spec.tenantRef" in out


def test_serve_refuses_unknown_flag():
    r = run("--listen", f"127.0.0.1:{free_port()}", "--no-such-flag")
    assert r.returncode != 0
    assert "--no-such-flag" in r.stdout + r.stderr

"""Editing a manifest file while the gateway runs (SPEC §1), embedded mode.

Shared-mode reload across two processes is in test_shared.py.
"""

from __future__ import annotations

import os
import time

import httpx

from conftest import OLD, RELOAD_BOUND, copy_manifests, probe, replace_in, user, wait_for


def wait_for_log(g, *needles: str) -> None:
    """Waits (bounded) until the gateway's log holds every needle: proof the watcher ran."""
    deadline = time.monotonic() + RELOAD_BOUND
    while time.monotonic() < deadline:
        text = g.log_path.read_text(errors="replace")
        if all(n in text for n in needles):
            return
        time.sleep(0.1)
    raise AssertionError(f"the log never said {needles}:\n{g.logs()}")


def test_edit_reloads_and_broken_edit_keeps_last_good(launcher, tmp_path):
    d = copy_manifests(tmp_path)
    g = launcher.gateway(manifests=d, name="reload")
    assert probe(g.url) == OLD

    support = d / "00-support.yaml"
    replace_in(support, OLD, "probe answer version two")
    wait_for(g.url, "probe answer version two")

    # Broken YAML: the last good configuration keeps serving.
    good = support.read_text()
    tmp = support.with_name(".broken.tmp")
    tmp.write_text(good.replace("probe answer version two", "probe answer version three") + "\n---\n: : [unclosed\n")
    os.replace(tmp, support)
    # The watcher ran and said why: the broken document, by file and document.
    wait_for_log(g, "keeping the last good configuration", "00-support.yaml, document", "(yaml)")
    assert probe(g.url) == "probe answer version two"
    assert httpx.get(f"{g.url}/readyz").status_code == 200

    # A valid YAML but invalid manifest (probability 2): also kept out.
    (d / "20-bad.yaml").write_text(
        "apiVersion: understudy.dev/v1alpha1\nkind: ChaosProfile\nmetadata: {name: bad}\n"
        "spec: {tenantRef: support, profile: server_error, probability: 2}\n"
    )
    support.write_text(good)
    wait_for_log(g, "20-bad.yaml, document 1 (ChaosProfile default/bad): spec.probability")
    assert probe(g.url) == "probe answer version two"

    # A misspelt field is refused by name, not loaded as a scenario without an answer.
    (d / "20-bad.yaml").write_text(
        "apiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {name: typo}\n"
        "spec: {tenantRef: support, keywords: [typo], respnse: never served}\n"
    )
    wait_for_log(g, 'spec.respnse: unknown field "respnse": did you mean "response"?')
    assert probe(g.url) == "probe answer version two"

    # Fixing everything reloads again.
    (d / "20-bad.yaml").unlink()
    replace_in(support, "probe answer version two", "probe answer version four")
    wait_for(g.url, "probe answer version four")


def test_new_tenant_file_appears_and_removed_tenant_disappears(launcher, tmp_path):
    d = copy_manifests(tmp_path)
    g = launcher.gateway(manifests=d, name="reload-new")
    (d / "30-new.yaml").write_text(
        "apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {name: newcomer}\nspec: {}\n---\n"
        "apiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {name: newcomer-hi}\n"
        "spec: {tenantRef: newcomer, keywords: [hi], response: 'Hi from the newcomer.'}\n"
    )
    deadline = time.monotonic() + RELOAD_BOUND
    answer = None
    while time.monotonic() < deadline:
        r = httpx.post(
            f"{g.url}/v1/chat/completions",
            headers={"X-Tenant-ID": "newcomer"},
            json={"model": "m", "messages": [user("hi")]},
        )
        if r.status_code == 200:
            answer = r.json()["choices"][0]["message"]["content"]
            break
        time.sleep(0.1)
    assert answer == "Hi from the newcomer."

    (d / "30-new.yaml").unlink()
    deadline = time.monotonic() + RELOAD_BOUND
    status = None
    while time.monotonic() < deadline:
        status = httpx.post(
            f"{g.url}/v1/chat/completions",
            headers={"X-Tenant-ID": "newcomer"},
            json={"model": "m", "messages": [user("hi")]},
        ).status_code
        if status == 404:
            break
        time.sleep(0.1)
    assert status == 404

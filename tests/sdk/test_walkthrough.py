"""The README's walkthroughs, run as written against a real gateway.

A fenced block preceded by ``<!-- walkthrough: NAME -->`` in README.md is extracted verbatim and
run. Shell blocks run in one ``bash -u`` session (an unset variable fails the test, as pasting
would fail); ``#>`` lines after a command are what it prints: they must equal the last lines of
the output of the commands since the previous comment, blank line or ``#>`` block, with ``…``
standing for anything. Python blocks run with this venv's interpreter; a trailing ``# "text"``
comment is a line the block prints, in order.

Two substitutions only, so that a test never needs port 8080 or a release build:
``localhost:8080`` becomes the test's gateway address, and ``cargo run … -p understudy-gateway
--`` becomes the gateway binary under test (``UNDERSTUDY_BIN``), listening where
``UNDERSTUDY_LISTEN`` says.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, clean_env, free_port, gateway_bin

README = REPO_ROOT / "README.md"
MARKER = re.compile(r"^<!-- walkthrough: ([a-z0-9-]+) -->\n```(\w+)\n(.*?)^```$", re.M | re.S)
STEP = "@@walkthrough-step@@"


def blocks() -> dict[str, tuple[str, str]]:
    return {m.group(1): (m.group(2), m.group(3)) for m in MARKER.finditer(README.read_text())}


def localise(text: str, port: int) -> str:
    text = text.replace("localhost:8080", f"127.0.0.1:{port}")
    return re.sub(r"cargo run [^&\n]*-p understudy-gateway --", f"'{gateway_bin()}'", text)


def steps(script: str) -> list[tuple[list[str], list[str]]]:
    """Splits a shell block into (commands, expected lines) at comments, blank lines and `#>`."""
    out: list[tuple[list[str], list[str]]] = [([], [])]
    for line in script.splitlines():
        if line.startswith("#>"):
            out[-1][1].append(line[2:].strip())
            continue
        if out[-1][1] or not line.strip() or line.startswith("#"):
            out.append(([], []))
        if line.strip() and not line.startswith("#"):
            out[-1][0].append(line)
    return [s for s in out if s[0]]


def pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected.split("…")) + r"\Z")


def run_shell(name: str, port: int, env: dict[str, str]) -> None:
    for tool in ("curl", "jq", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    lang, text = blocks()[name]
    assert lang == "sh"
    plan = steps(localise(text, port))
    script = ["set -u", "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT"]
    for commands, _ in plan:
        script += commands
        script.append(f"printf '\\n{STEP}\\n'")
    r = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    outputs = r.stdout.split(f"\n{STEP}\n")
    assert r.returncode == 0 and len(outputs) == len(plan) + 1, (
        f"the {name} walkthrough stopped (exit {r.returncode}):\n{r.stdout}\n{r.stderr}"
    )
    for (commands, expected), output in zip(plan, outputs):
        if not expected:
            continue
        lines = [line for line in output.splitlines() if line.strip()][-len(expected) :]
        shown = "\n".join(commands)
        assert len(lines) == len(expected), f"{shown}\nprinted {output!r}, expected {expected}"
        for got, want in zip(lines, expected):
            assert pattern(want).match(got.strip()), f"{shown}\nprinted {got!r}, expected {want!r}"


def test_readme_public_api_walkthrough():
    """Starts its own gateway (with the admin token it exports), as the README does."""
    port = free_port()
    env = {**clean_env(), "UNDERSTUDY_LISTEN": f"127.0.0.1:{port}", "UNDERSTUDY_DRAIN_GRACE": "0s"}
    run_shell("public-api", port, env)


def test_readme_curl_examples(session_launcher):
    gw = session_launcher.gateway(manifests=REPO_ROOT / "examples", name="readme")
    run_shell("curl", gw.port, clean_env())


def test_readme_sdk_example(session_launcher):
    gw = session_launcher.gateway(manifests=REPO_ROOT / "examples", name="readme-sdk")
    lang, text = blocks()["python"]
    assert lang == "python"
    expected = re.findall(r'# "(.*)"$', text, re.M)
    assert expected, "the block documents what it prints"
    r = subprocess.run(
        [sys.executable, "-c", localise(text, gw.port)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == expected


def test_every_marked_block_is_run():
    assert set(blocks()) == {"public-api", "curl", "python"}

#!/usr/bin/env python3
"""Fails when a file of the repository refers to a path outside it.

A clone has nothing beside it: a test, a script or a page that reads (or sends the reader to) a
folder next to the repository, or an absolute path of one machine, works on that machine only.
scripts/test.sh runs this first. It reads every file git tracks (`git ls-files`; text files
only) and reports, with its file and line:
  - a relative path whose `..` segments climb above the repository's root, counted from the
    folder of the file that holds it (a link in docs/ to the parent folder's `charts/` is fine);
  - the folder that sat beside the workspace this project was started in, `shared`: reached with
    `..` segments (at any depth), built in Python with `.parent` and `/` and its quoted name, or
    named as a bare path of a file or folder in it (`shared` then a slash, a name and an
    extension, or a folder and a slash), unless the repository has a top-level `shared` folder
    of its own;
  - an absolute path under the development machines' workspace root: `/work` and a slash, where
    it starts a path (not `/home/me/work/`, not a URL's path).
The patterns are built so that this file does not match them itself; it is scanned like any other.

Usage: python3 tests/repo_paths.py (from anywhere; any Python 3.8+, standard library only).
Exits 1, listing what it found, when anything refers outside the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_UP = r"(?:\.\.[/\\])"  # one `..` segment
# `..` segments where a path starts: at the start of a line, or after a space, a quote, a
# bracket or `=` (not in the middle of a URL or of another path).
CLIMB = re.compile(r"(?:^|(?<=[\s\"'`(\[{<=,:]))(" + _UP + r"+)")
SIBLING = "shared"
OUTSIDE = [
    ("the folder beside the workspace", re.compile(r"(?<![\w.-])" + _UP + r"+" + SIBLING + r"\b")),
    ("the folder beside the workspace", re.compile(r"\.parent\s*/\s*[\"']" + SIBLING + r"[\"']")),
    ("an absolute path of the development machine", re.compile(r"(?<![\w.~-])/wor[k]/")),
]
BARE = ("the folder beside the workspace",
        re.compile(r"(?<![\w./\\-])" + SIBLING + r"/(?:[\w.-]+\.[A-Za-z]{1,5}\b|[\w-]+/)"))


def tracked_files() -> list[str]:
    """The files git tracks, relative to the root; without git, every file under the root but
    the usual build and cache folders."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True,
                             check=True, timeout=60).stdout
        return [name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.SubprocessError):
        skip = {".git", "target", "node_modules", ".venv", ".venv-helm", "__pycache__"}
        files = []
        for folder, dirs, names in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in skip]
            files += [str(Path(folder, n).relative_to(ROOT)) for n in names]
        return files


def findings(name: str, text: str, has_sibling: bool) -> list[str]:
    depth = len(Path(name).parent.parts)  # how many `..` the file's folder allows
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        found = []
        for match in CLIMB.finditer(line):
            ups = len(re.findall(_UP, match[1]))
            if ups > depth:
                found.append(f"{match[1]!r} climbs {ups} folder(s) up from a file {depth} deep")
        patterns = OUTSIDE + ([] if has_sibling else [BARE])
        found += [f"{what}: {match[0]!r}" for what, pattern in patterns
                  for match in pattern.finditer(line)]
        out += [f"{name}:{number}: {problem}" for problem in found]
    return out


def main() -> int:
    has_sibling = (ROOT / SIBLING).is_dir()
    problems, scanned = [], 0
    for name in tracked_files():
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree, or a submodule
            continue
        data = path.read_bytes()
        if b"\0" in data:  # binary
            continue
        scanned += 1
        problems += findings(name, data.decode("utf-8", errors="replace"), has_sibling)
    if problems:
        print("repo paths: files that refer to a path outside the repository (a clone has "
              "nothing beside it):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"repo paths: {scanned} tracked files, none refers to a path outside the repository")
    return 0


if __name__ == "__main__":
    sys.exit(main())

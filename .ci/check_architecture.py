"""Checks that ARCHITECTURE.md names every source module: section "1. The
pieces" has one table per crate, under a heading naming the crate
(`### grpc-router-runtime`), whose first column is each file's path relative to
the crate's src/ in backticks. Exits 1 naming each source file without a row
(and each row naming a file that is not there); prints one OK line otherwise.
Python 3 standard library only."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "ARCHITECTURE.md"
SECTION = "## 1. The pieces"

# heading -> (the directory paths are relative to, the files it must list)
CRATES = {
    "grpc-router-runtime": ("grpc-router-runtime/src", "*.rs"),
    "grpc-router": ("grpc-router/src", "*.rs"),
    "protoc-gen-router": ("protoc-gen-router/src", "*.rs"),
    "router-bench": ("router-bench/src", "*.rs"),
    "examples/myservice": ("examples/myservice/src", "*.rs"),
    "test-kit": ("test-kit/src", "*.rs"),
    "e2e": ("e2e/src", "*.rs"),
    "bridges/python": ("bridges/python/src", "grpc_router_bridge/*.py"),
}

ROW_PATH = re.compile(r"^\|\s*`([^`]+)`\s*\|")


def tables(text: str) -> dict[str, set[str]]:
    """The paths in the first column of each crate's table, by heading."""
    start = text.find("\n" + SECTION + "\n")
    if start < 0:
        raise SystemExit(f"check_architecture: {DOC.name} has no section {SECTION!r}")
    body = text[start + len(SECTION) + 2 :]
    end = re.search(r"(?m)^## ", body)
    if end:
        body = body[: end.start()]
    found: dict[str, set[str]] = {}
    heading = None
    for line in body.splitlines():
        if line.startswith("### "):
            name = line[4:].strip().strip("`")
            heading = name if name in CRATES else None
            if heading is not None:
                found.setdefault(heading, set())
        elif heading is not None:
            m = ROW_PATH.match(line)
            if m:
                found[heading].add(m.group(1))
    return found


def sources(base: str, pattern: str) -> set[str]:
    """The source files of a crate, relative to `base`."""
    root = ROOT / base
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.match(pattern)}


def main() -> int:
    found = tables(DOC.read_text())
    problems = []
    checked = 0
    for crate, (base, pattern) in CRATES.items():
        if crate not in found:
            problems.append(f"{DOC.name}: no table '### {crate}' in section {SECTION!r}")
            continue
        files = sources(base, pattern)
        checked += len(files)
        for path in sorted(files - found[crate]):
            problems.append(f"{DOC.name}: {base}/{path} has no row in the table '### {crate}'")
        for path in sorted(found[crate] - files):
            problems.append(f"{DOC.name}: the table '### {crate}' names {path}, which is not a file of {base}/")
    for line in problems:
        print(line)
    if problems:
        print(f"architecture: {len(problems)} problem(s); add a row per module (path relative to the crate's src/)")
        return 1
    print(f"architecture: OK, {checked} source files of {len(CRATES)} crates each have a row in {DOC.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

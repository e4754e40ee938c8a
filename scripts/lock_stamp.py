"""The fingerprint of pyproject.toml's dependency declarations, stamped into each lock file.

`python scripts/lock_stamp.py`             prints the fingerprint (scripts/lock.sh writes it into the locks);
`python scripts/lock_stamp.py --check F…`  exits 1, saying what to run, when a lock was made from other
                                           declarations: `make venv` refuses to install a drifted lock.
Only the declarations count (requires-python, dependencies, optional-dependencies), so editing tool settings
in pyproject.toml does not invalidate the lock, while adding or changing any dependency does.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "# pyproject-dependencies-sha256: "


def fingerprint(pyproject: Path = ROOT / "pyproject.toml") -> str:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    declared = {
        "requires-python": project.get("requires-python", ""),
        "dependencies": sorted(project.get("dependencies", [])),
        "optional-dependencies": {k: sorted(v) for k, v in sorted(project.get("optional-dependencies", {}).items())},
    }
    return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()


def stamped(lock: Path) -> str | None:
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.startswith(PREFIX):
            return line.removeprefix(PREFIX).strip()
    return None


def check(locks: list[Path]) -> int:
    expected = fingerprint()
    stale = [lock for lock in locks if not lock.exists() or stamped(lock) != expected]
    for lock in stale:
        print(
            f"error: {lock} does not match the dependencies declared in pyproject.toml "
            "(a dependency was added or changed since it was generated).\n"
            "       Regenerate it with `make lock` and commit the result.",
            file=sys.stderr,
        )
    return 1 if stale else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:
        sys.exit(check([Path(p) for p in sys.argv[2:]]))
    print(fingerprint())

"""Print a pip constraints file pinning every runtime dependency to its declared floor.

``make test-min-deps`` installs the project with these constraints into a fresh
venv and runs the tests, so a floor in pyproject.toml that the code has outgrown
fails CI instead of a user's install. Only ``[project] dependencies`` are pinned:
the dev tools are not what users install.

    python scripts/min_constraints.py [pyproject.toml] > constraints.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# "name[extra]>=1.2,<2 ; marker": the name, and the version after ">=".
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")
FLOOR = re.compile(r">=\s*([0-9][^,;\s]*)")


def min_constraints(pyproject: Path) -> list[str]:
    """``name==floor`` for each runtime dependency; an error for one without a floor."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = []
    for requirement in project["dependencies"]:
        match = REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"cannot read the requirement {requirement!r}")
        name, spec = match.groups()
        requirement_spec, _, marker = spec.partition(";")
        floor = FLOOR.search(requirement_spec)
        if floor is None:
            # Without a floor any version is "supported": declare one.
            raise SystemExit(f"{name} has no >= floor in {pyproject}")
        pin = f"{name}=={floor.group(1)}"
        lines.append(f"{pin} ;{marker}" if marker.strip() else pin)
    return lines


def main(argv: list[str]) -> int:
    path = (
        Path(argv[1])
        if len(argv) > 1
        else Path(__file__).resolve().parent.parent / "pyproject.toml"
    )
    print("\n".join(min_constraints(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

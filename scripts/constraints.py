"""Write constraints.txt: the installed versions of stream-guard's runtime dependencies, transitively.

The image installs with these pins (`pip wheel -c constraints.txt`), so it runs the versions
the test suite ran on. Run it in the project's venv after `make install`: `make constraints`.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
from pathlib import Path

HEADER = "# Versions the image is built with (the test suite ran on them); refresh with `make constraints`.\n"


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(root: str = "stream-guard", extras: tuple[str, ...] = ("schemaregistry",)) -> dict[str, str]:
    """Installed version of every distribution ``root`` needs at run time (dev extras excluded)."""
    versions: dict[str, str] = {}
    stack = [root]
    while stack:
        name = stack.pop()
        if _key(name) in versions:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        versions[_key(name)] = dist.version
        for requirement in dist.requires or []:
            marker = requirement.partition(";")[2]
            if "extra ==" in marker and not any(f'"{e}"' in marker for e in extras):
                continue
            stack.append(re.split(r"[ ;<>=!\[~(]", requirement, maxsplit=1)[0])
    versions.pop(_key(root), None)
    return versions


if __name__ == "__main__":
    pins = runtime_closure()
    Path(__file__).resolve().parent.parent.joinpath("constraints.txt").write_text(
        HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
    )
    print(f"constraints.txt: {len(pins)} pins")

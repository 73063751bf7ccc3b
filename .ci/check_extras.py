"""Fail when the runtime extras resolve to PyTorch (or its kin) or to an AGPL licence.

Usage: ``python .ci/check_extras.py REPORT.json``, where the report comes from
``pip install --dry-run --ignore-installed --report REPORT.json -e ".[all]"``: pip's own
resolution, so nothing is installed to check it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# The runtime and its extras stay light: these come only with the `export` extra.
HEAVY = ("torch", "transformers", "optimum", "tensorflow", "jax")
HEAVY_PREFIXES = ("nvidia-",)


def _licence_text(metadata: dict[str, Any]) -> str:
    """Every licence statement a distribution's metadata makes, as one string."""
    parts = [str(metadata.get("license_expression") or ""), str(metadata.get("license") or "")]
    parts += [c for c in metadata.get("classifier", []) if c.startswith("License ::")]
    return " ".join(parts)


def main(report_path: str) -> int:
    """Print the offending distributions; exit 1 if there are any."""
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    problems: list[str] = []
    for item in report["install"]:
        metadata = item["metadata"]
        name = metadata["name"].lower()
        if name in HEAVY or name.startswith(HEAVY_PREFIXES):
            problems.append(f"{name}: a heavy framework")
        licence = _licence_text(metadata)
        if "AGPL" in licence or "Affero" in licence:
            problems.append(f"{name}: {licence.strip()}")
    if problems:
        sys.stderr.write("the runtime extras resolve to:\n  " + "\n  ".join(problems) + "\n")
        return 1
    count = len(report["install"])
    sys.stdout.write(f"the extras resolve to {count} distributions: no PyTorch, no AGPL\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

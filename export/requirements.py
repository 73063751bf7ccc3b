"""What the export step needs beyond the runtime, read from the installed package metadata.

The list lives in one place, the ``export`` extra of ``pyproject.toml``; this module reads
it back from ``importlib.metadata`` so that an error can name what is missing. It imports
nothing heavy, so the runtime's CLI can call it before loading the export step.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re

from edge_colbert._adapters import MissingExtraError

DISTRIBUTION = "edge-colbert"
EXTRA = "export"
INSTALL_HINT = f'pip install "{DISTRIBUTION}[{EXTRA}]"'

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


class ExportDependencyError(MissingExtraError):
    """The export extra is not installed: one line naming what is missing and the fix.

    A :class:`~edge_colbert._adapters.MissingExtraError` like every missing extra's error:
    an ``ImportError`` (``except ImportError`` around an optional import catches it) and an
    ``EdgeColbertError`` (the CLI prints it as one line).
    """


def export_requirements() -> tuple[str, ...]:
    """The distribution names of the ``export`` extra, in pyproject order.

    Empty when edge-colbert is not installed (a bare source tree on ``sys.path``): then only
    the install command can be named. Thread-safe (reads metadata, keeps no state).
    """
    try:
        requirements = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return ()
    names: list[str] = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        match = _NAME.match(spec)
        if match and EXTRA in _EXTRA_MARKER.findall(marker):
            names.append(match.group(1))
    return tuple(names)


def module_name(distribution: str) -> str:
    """The import name of a distribution of the extra (``sentence-transformers`` ->
    ``sentence_transformers``); true for every package the extra lists."""
    return distribution.lower().replace("-", "_").replace(".", "_")


def missing_export_modules() -> list[str]:
    """Import names of the extra's packages that cannot be found (none are imported)."""
    missing = []
    for distribution in export_requirements():
        name = module_name(distribution)
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def export_dependency_message(missing: list[str]) -> str:
    """The one-line error for a missing export extra."""
    what = f" (missing: {', '.join(missing)})" if missing else ""
    return f"the export step needs the export extra{what}: {INSTALL_HINT}"


def require_export_dependencies() -> None:
    """Raise :class:`ExportDependencyError` unless every package of the extra is importable."""
    missing = missing_export_modules()
    if missing:
        raise ExportDependencyError(export_dependency_message(missing))

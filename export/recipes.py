"""Recipes: what a known checkpoint's own files do not say (models/<recipe>.json).

A recipe matches when its ``match`` names equal the checkpoint id's last part or the folder
name (case-insensitive). Its ``settings`` fill in only what the checkpoint leaves unset;
command-line flags override both.
"""

from __future__ import annotations

import json
import logging
import sys
from importlib import resources
from typing import TYPE_CHECKING, Any

from edge_colbert.errors import ExportError

from .requirements import INSTALL_HINT

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

logger = logging.getLogger(__name__)

# Recipes ship beside the bundled model, in the package that ``models/`` installs as.
RECIPE_PACKAGE = "edge_colbert.models"


def recipe_files() -> list[Traversable]:
    """The recipe files (``*.json``) of the installed ``edge_colbert.models``, by name."""
    try:
        folder = resources.files(RECIPE_PACKAGE)
    except ModuleNotFoundError as error:
        raise ExportError(
            f"the recipes package {RECIPE_PACKAGE} is not installed ({error}); reinstall "
            f"edge-colbert: {INSTALL_HINT}"
        ) from error
    files = [f for f in folder.iterdir() if f.is_file() and f.name.endswith(".json")]
    return sorted(files, key=lambda f: f.name)


def load_recipe(path: Traversable) -> dict[str, Any]:
    """Read one recipe file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ExportError(f"recipe {path.name} cannot be read ({error})") from error
    if not isinstance(data, dict) or "match" not in data:
        raise ExportError(f"recipe {path.name} must be an object with a 'match' list")
    return data


def find_recipe(checkpoint: str) -> dict[str, Any] | None:
    """The recipe whose ``match`` names the checkpoint (by id or folder name), if any."""
    name = checkpoint.rstrip("/").replace("\\", "/").split("/")[-1].lower()
    full = checkpoint.rstrip("/").lower()
    for path in recipe_files():
        recipe = load_recipe(path)
        names = [str(m).lower() for m in recipe["match"]]
        if name in names or full in names:
            logger.info("using recipe %s for %s", path.name, checkpoint)
            return recipe
    return None

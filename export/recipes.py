"""Recipes: what a known checkpoint's own files do not say (models/<recipe>.json).

A recipe matches when its ``match`` names equal the checkpoint id's last part or the folder
name (case-insensitive). Its ``settings`` fill in only what the checkpoint leaves unset;
command-line flags override both.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edge_colbert.errors import ExportError

logger = logging.getLogger(__name__)

RECIPE_DIR = Path(__file__).resolve().parent.parent / "models"


def _candidates() -> list[Path]:
    """Recipe files shipped in ``models/`` (source tree or the installed package)."""
    folders = [RECIPE_DIR]
    try:
        from importlib import resources

        installed = Path(str(resources.files("edge_colbert.models")))
        folders.append(installed)
    except (ImportError, ModuleNotFoundError, TypeError):
        logger.debug("no installed edge_colbert.models package")
    files: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            files.extend(sorted(folder.glob("*.json")))
    return files


def load_recipe(path: Path) -> dict[str, Any]:
    """Read one recipe file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ExportError(f"recipe {path} cannot be read ({error})") from error
    if not isinstance(data, dict) or "match" not in data:
        raise ExportError(f"recipe {path} must be an object with a 'match' list")
    return data


def find_recipe(checkpoint: str) -> dict[str, Any] | None:
    """The recipe whose ``match`` names the checkpoint (by id or folder name), if any."""
    name = checkpoint.rstrip("/").replace("\\", "/").split("/")[-1].lower()
    full = checkpoint.rstrip("/").lower()
    for path in _candidates():
        recipe = load_recipe(path)
        names = [str(m).lower() for m in recipe["match"]]
        if name in names or full in names:
            logger.info("using recipe %s for %s", path.name, checkpoint)
            return recipe
    return None

"""Which files a folder run looks at: the walk, its default ignores and ``--exclude`` /
``--include`` globs, and how each file came in (walked, or named on the command line).

Thread-safe: :class:`Rules` is immutable and the walk keeps its state in the generator.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_colbert.errors import InvalidInputError
from edge_colbert.extract import SUPPORTED_SUFFIXES

logger = logging.getLogger(__name__)

# Folders of tooling and build output, not a person's documents (hidden folders, such as
# .git and .venv, are skipped too, and so is any folder holding a pyvenv.cfg: a virtualenv).
SKIPPED_DIRS = frozenset({"node_modules", "__pycache__", "site-packages", "venv", "env"})
FOLDER = "folder"
NAMED = "named"

OnSkip = Callable[[Path, str], None]


@dataclass(frozen=True)
class Found:
    """A file to index: ``path`` on disk, ``root`` the PATH argument it came from, and
    ``origin``: :data:`FOLDER` (a folder walk found it) or :data:`NAMED` (given itself)."""

    path: Path
    root: Path
    origin: str


def _match(pattern: str, relative: str) -> bool:
    """gitignore-like: a pattern without ``/`` matches any one name along the path; one
    with ``/`` matches the whole path from the root (``*`` crosses ``/``)."""
    pattern = pattern.rstrip("/")
    if "/" in pattern:
        pattern = pattern.lstrip("/")
        parts = relative.split("/")
        return any(
            fnmatch.fnmatchcase("/".join(parts[:n]), pattern) for n in range(1, len(parts) + 1)
        )
    return any(fnmatch.fnmatchcase(name, pattern) for name in relative.split("/"))


@dataclass(frozen=True)
class Rules:
    """What a folder walk yields.

    ``exclude`` globs drop files and folders (``*.rst.txt``, ``_sources``, ``docs/old/*``);
    ``include`` globs add files whose suffix no reader knows (``*.log``, ``Makefile``).
    Hidden names, :data:`SKIPPED_DIRS` and virtualenvs are always skipped by a walk.
    """

    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()

    def excluded(self, relative: str) -> bool:
        """Whether an ``--exclude`` glob drops this path (relative to its root, ``/``-joined)."""
        return any(_match(pattern, relative) for pattern in self.exclude)

    def wanted_name(self, name: str, relative: str) -> bool:
        """Whether a walk indexes a file of this name: a known suffix or an include glob."""
        if Path(name).suffix.lower() in SUPPORTED_SUFFIXES:
            return True
        return any(_match(pattern, relative) for pattern in self.include)

    def admits_folder(self, path: Path, root: Path) -> bool:
        """Whether a walk of ``root`` would enter the folder ``path`` (names only)."""
        try:
            relative = path.relative_to(root)
        except ValueError:
            return False
        parts = relative.parts
        if any(part.startswith(".") or part in SKIPPED_DIRS for part in parts):
            return False
        if _is_venv(str(path)):
            return False
        return not parts or not self.excluded(relative.as_posix())

    def admits(self, path: Path, root: Path) -> bool:
        """Whether a walk of ``root`` would yield ``path`` (a file), judged from names only:
        what watch mode asks of each changed file."""
        try:
            relative = path.relative_to(root)
        except ValueError:
            return False
        parts = relative.parts
        if not parts or any(part.startswith(".") for part in parts):
            return False
        if any(part in SKIPPED_DIRS for part in parts[:-1]):
            return False
        text = relative.as_posix()
        return not self.excluded(text) and self.wanted_name(parts[-1], text)


# The rules of a walk given no globs.
DEFAULT_RULES = Rules()


def check_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The PATH arguments as paths, each checked to exist.

    Raises:
        InvalidInputError: a path does not exist (nothing has been written yet).
    """
    given = [Path(p) for p in paths]
    for path in given:
        if not path.exists():
            raise InvalidInputError(
                f"{path} does not exist; give files or folders to index "
                "(see `edge-colbert index --help` for the formats read)."
            )
    return given


def walk(
    paths: Sequence[Path], rules: Rules = DEFAULT_RULES, on_skip: OnSkip | None = None
) -> Iterator[Found]:
    """The files to index under ``paths``, each once, in a stable order.

    A path naming a file is yielded (as :data:`NAMED`) whatever its suffix: the person asked
    for it. A folder is walked in sorted name order for files a reader knows or that an
    include glob names (as :data:`FOLDER`). Symbolic links are followed; a folder reached
    twice (a loop) is walked once. A file named and also inside a walked folder counts as
    named.
    """
    named = set()
    for path in paths:
        if not path.is_dir():
            named.add(os.path.realpath(path))
    seen: set[str] = set()
    seen_dirs: set[str] = set()
    for root in paths:
        if root.is_dir():
            found: Iterator[Found] = _walk(root, root, rules, seen_dirs, on_skip)
        else:
            found = iter([Found(root, root, NAMED)])
        for item in found:
            real = os.path.realpath(item.path)
            if item.origin == FOLDER and real in named:
                continue
            if real not in seen:
                seen.add(real)
                yield item


def walk_folder(
    folder: Path, root: Path, rules: Rules = DEFAULT_RULES, on_skip: OnSkip | None = None
) -> Iterator[Found]:
    """The files a walk of ``root`` finds inside its subfolder ``folder`` (a folder that
    appeared under a watched root), globs matched from ``root``."""
    return _walk(folder, root, rules, set(), on_skip)


def _is_venv(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, "pyvenv.cfg"))  # noqa: PTH110, PTH118


def _walk(
    folder: Path, root: Path, rules: Rules, seen_dirs: set[str], on_skip: OnSkip | None
) -> Iterator[Found]:
    """Depth-first, without recursion (a deep tree must not hit Python's recursion limit)."""
    stack = [folder]
    while stack:
        current = stack.pop()
        real = os.path.realpath(current)
        if real in seen_dirs:
            logger.debug("not walking %s again (symbolic link loop or second link)", current)
            continue
        seen_dirs.add(real)
        try:
            entries = sorted(os.scandir(current), key=lambda entry: entry.name)
        except OSError as error:
            _skip(on_skip, current, f"folder not readable ({error.strerror or error})")
            continue
        subfolders: list[Path] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            relative = path.relative_to(root).as_posix()
            try:
                is_dir = entry.is_dir()  # follows symlinks
                is_file = not is_dir and entry.is_file()
            except OSError as error:
                if error.errno == errno.ELOOP:
                    _skip(on_skip, path, "symbolic link loop")
                continue
            if rules.excluded(relative):
                continue
            if is_dir:
                if entry.name not in SKIPPED_DIRS and not _is_venv(entry.path):
                    subfolders.append(path)
            elif is_file:
                if rules.wanted_name(entry.name, relative):
                    yield Found(path, root, FOLDER)
            elif entry.is_symlink() and rules.wanted_name(entry.name, relative):
                _skip(on_skip, path, _link_reason(path))
        stack.extend(reversed(subfolders))


def _link_reason(path: Path) -> str:
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop"
        return "broken symbolic link"
    return "not a regular file"


def _skip(on_skip: OnSkip | None, path: Path, reason: str) -> None:
    logger.debug("skipped %s: %s", path, reason)
    if on_skip is not None:
        on_skip(path, reason)

"""Which files a folder run looks at: the walk, its default ignores and ``--exclude`` /
``--include`` globs, and how each file came in (walked, or named on the command line).

Thread-safe: :class:`Rules` is immutable and the walk keeps its state in the generator.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import stat
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
    """A file to index: ``path`` on disk, ``root`` the PATH argument it came from,
    ``origin``: :data:`FOLDER` (a folder walk found it) or :data:`NAMED` (given itself), and
    ``stat``: the file's stat when it was found (None: not taken yet). Immutable, so
    thread-safe."""

    path: Path
    root: Path
    origin: str
    stat: os.stat_result | None = None


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
    Immutable, so thread-safe.
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
    twice (a loop) is walked once, and a file reached twice (by two names) is yielded once.
    A file named and also inside a walked folder counts as named.
    """
    named: set[tuple[int, int]] = set()
    for path in paths:
        if not path.is_dir():
            named.add(_identity(path.stat()))
    seen: set[tuple[int, int]] = set()
    seen_dirs: set[tuple[int, int]] = set()
    for root in paths:
        if root.is_dir():
            found: Iterator[Found] = _walk(root, root, rules, seen_dirs, on_skip)
        else:
            found = iter([Found(root, root, NAMED, root.stat())])
        for item in found:
            identity = _identity(item.stat) if item.stat is not None else None
            if identity is None:
                yield item
                continue
            if item.origin == FOLDER and identity in named:
                continue
            if identity not in seen:
                seen.add(identity)
                yield item


def _identity(info: os.stat_result) -> tuple[int, int]:
    """What makes a file or folder the same one whatever the name it is reached by."""
    return info.st_dev, info.st_ino


def walk_folder(
    folder: Path, root: Path, rules: Rules = DEFAULT_RULES, on_skip: OnSkip | None = None
) -> Iterator[Found]:
    """The files a walk of ``root`` finds inside its subfolder ``folder`` (a folder that
    appeared under a watched root), globs matched from ``root``."""
    return _walk(folder, root, rules, set(), on_skip)


def _is_venv(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, "pyvenv.cfg"))  # noqa: PTH110, PTH118


def _walk(
    folder: Path,
    root: Path,
    rules: Rules,
    seen_dirs: set[tuple[int, int]],
    on_skip: OnSkip | None,
) -> Iterator[Found]:
    """Depth-first, without recursion (a deep tree must not hit Python's recursion limit).

    Paths stay strings until a file is yielded, and each entry is stat'ed once (the stat is
    handed on in :class:`Found`): an unchanged re-run of 5,000 files is mostly this walk.
    """
    prefix = len(str(root).rstrip(os.sep)) + 1
    stack = [str(folder)]
    while stack:
        current = stack.pop()
        try:
            identity = _identity(os.stat(current))  # noqa: PTH116
        except OSError:
            continue
        if identity in seen_dirs:
            logger.debug("not walking %s again (symbolic link loop or second link)", current)
            continue
        seen_dirs.add(identity)
        try:
            with os.scandir(current) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            _skip(on_skip, Path(current), f"folder not readable ({error.strerror or error})")
            continue
        subfolders: list[str] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = entry.path[prefix:].replace(os.sep, "/")
            try:
                info = entry.stat()  # follows symlinks
            except OSError as error:
                if error.errno == errno.ELOOP:
                    _skip(on_skip, Path(entry.path), "symbolic link loop")
                elif entry.is_symlink() and rules.wanted_name(entry.name, relative):
                    _skip(on_skip, Path(entry.path), "broken symbolic link")
                continue
            if rules.excluded(relative):
                continue
            if stat.S_ISDIR(info.st_mode):
                if entry.name not in SKIPPED_DIRS and not _is_venv(entry.path):
                    subfolders.append(entry.path)
            elif stat.S_ISREG(info.st_mode):
                if rules.wanted_name(entry.name, relative):
                    yield Found(Path(entry.path), root, FOLDER, info)
            elif rules.wanted_name(entry.name, relative):
                _skip(on_skip, Path(entry.path), "not a regular file")
        stack.extend(reversed(subfolders))


def _skip(on_skip: OnSkip | None, path: Path, reason: str) -> None:
    logger.debug("skipped %s: %s", path, reason)
    if on_skip is not None:
        on_skip(path, reason)

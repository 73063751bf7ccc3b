"""Without its extra, each adapter fails with one line naming the ``pip install`` to run.

The framework is hidden from a fresh interpreter (``sys.modules[name] = None`` makes its
import fail as a missing package does), so these run the same with or without the extras
installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_colbert import Encoder, Index

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("edge_colbert.langchain", "langchain_core", "langchain"),
        ("edge_colbert.llama_index", "llama_index", "llama-index"),
    ],
)
def test_import_without_the_extra_names_it(module: str, framework: str, extra: str) -> None:
    code = (
        "import sys\n"
        f"sys.modules[{framework!r}] = None\n"
        "from edge_colbert._adapters import MissingExtraError\n"
        "from edge_colbert.errors import EdgeColbertError\n"
        "try:\n"
        f"    import {module}\n"
        "except MissingExtraError as error:\n"
        "    assert isinstance(error, ImportError) and isinstance(error, EdgeColbertError)\n"
        "    print(error)\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(f'pip install "edge-colbert[{extra}]"'), lines


def test_mcp_command_without_the_extra_is_one_error_line(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    with Index(db, encoder=Encoder()) as index:
        index.add(["a note"])
    before = db.read_bytes()
    code = (
        "import sys\n"
        "sys.modules['mcp'] = None\n"
        "from edge_colbert.cli import main\n"
        "sys.exit(main(['mcp', sys.argv[1]]))\n"
    )
    done = _python(code, str(db))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "edge-colbert: error: the MCP server needs the mcp SDK 2.x, which is not installed; "
        'install it with pip install -U "edge-colbert[mcp]"'
    ]
    assert done.stdout == ""
    assert db.read_bytes() == before

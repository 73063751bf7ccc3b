"""``edge-colbert push`` without the qdrant extra, and ``edge_colbert.ray`` without the ray
extra: one line naming the ``pip install``, exit 1, the index file unchanged.

Runs with or without the extras installed (the import is blocked in the child process or
with ``sys.modules``), so the runtime-only CI pass checks the message a user without the
extra sees.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from edge_colbert import Encoder, Index
from edge_colbert._adapters import MissingExtraError

# Runs the CLI as `python -m edge_colbert` does, with qdrant_client made unimportable.
_BLOCKED_CLI = (
    "import runpy, sys; sys.modules['qdrant_client'] = None; "
    "sys.argv = ['edge-colbert', *sys.argv[1:]]; "
    "runpy.run_module('edge_colbert', run_name='__main__')"
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_without_the_qdrant_extra_is_one_line(tmp_path: Path, tiny_encoder: Encoder) -> None:
    path = tmp_path / "docs.db"
    with Index(path, encoder=tiny_encoder) as index:
        index.add(["river stone", "cloud paper"], ids=["a", "b"])
    before = _digest(path)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _BLOCKED_CLI,
            "push",
            str(path),
            "--qdrant",
            ":memory:",
            "--collection",
            "c",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("edge-colbert: error: qdrant_client is not installed")
    assert done.stderr.rstrip().endswith('pip install "edge-colbert[qdrant]"')
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert _digest(path) == before


def test_ray_without_the_ray_extra_names_the_install(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    from edge_colbert import ray as edge_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(MissingExtraError, match=r'pip install "edge-colbert\[ray\]"'):
        edge_ray.encode(object(), tiny_model_dir)  # type: ignore[arg-type]
    with pytest.raises(MissingExtraError, match=r'pip install "edge-colbert\[ray\]"'):
        edge_ray.write_indexes(object(), tiny_model_dir, "shards")  # type: ignore[arg-type]

"""A file whose recorded codec this version does not read is refused, untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge_colbert.encoder import Encoder
from edge_colbert.errors import IndexFileError
from edge_colbert.index import Index


def test_a_new_file_records_int8_and_opens(tmp_path: Path, tiny_encoder: Encoder) -> None:
    path = tmp_path / "int8.db"
    with Index(path, encoder=tiny_encoder) as index:
        index.add(["one small text", "another small text"])
        assert index.codec == "int8"
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'codec'").fetchone()[0] == "int8"
    con.close()


@pytest.mark.parametrize("readonly", [False, True])
def test_an_unknown_codec_is_refused_untouched(
    tmp_path: Path, tiny_encoder: Encoder, readonly: bool
) -> None:
    path = tmp_path / "future.db"
    with Index(path, encoder=tiny_encoder) as index:
        index.add(["one small text", "another small text"])
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = 'residual2' WHERE key = 'codec'")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(IndexFileError, match=r"codec 'residual2'.*reads int8.*pip install -U"):
        Index(path, encoder=tiny_encoder, readonly=readonly)
    assert path.read_bytes() == before

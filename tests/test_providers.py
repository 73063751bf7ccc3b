"""Execution providers: the best available is picked, an explicit list is honoured, and a
provider that fails to start falls back to the CPU with a warning that says why."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from edge_colbert import providers
from edge_colbert.encoder import Encoder
from edge_colbert.errors import InvalidInputError, ModelFolderError
from edge_colbert.providers import CPU, create_session, resolve_providers


def test_best_available_is_picked_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    offered = [
        CPU,
        "OpenVINOExecutionProvider",
        "CoreMLExecutionProvider",
        "AzureExecutionProvider",
    ]
    with caplog.at_level(logging.INFO, logger="edge_colbert.providers"):
        chosen = resolve_providers(None, available=offered)
    assert chosen == ["CoreMLExecutionProvider", CPU]
    assert "CoreMLExecutionProvider" in caplog.text
    assert resolve_providers(None, available=["CUDAExecutionProvider", CPU]) == [
        "CUDAExecutionProvider",
        CPU,
    ]


def test_remote_azure_provider_is_never_picked_automatically() -> None:
    assert resolve_providers(None, available=["AzureExecutionProvider", CPU]) == [CPU]


def test_explicit_list_is_honoured_with_short_names() -> None:
    offered = ["AzureExecutionProvider", CPU]
    assert resolve_providers(["cpu"], available=offered) == [CPU]
    assert resolve_providers(["AzureExecutionProvider"], available=offered) == [
        "AzureExecutionProvider",
        CPU,
    ]


def test_unknown_provider_lists_the_available_ones() -> None:
    with pytest.raises(InvalidInputError, match=r"'cuda' is not available.*available: Azure"):
        resolve_providers(["cuda"], available=["AzureExecutionProvider", CPU])
    with pytest.raises(InvalidInputError, match="empty"):
        resolve_providers([], available=[CPU])


def test_bad_thread_count_is_refused(tiny_model_dir: Path) -> None:
    for threads in (0, -2, 1.5, True):
        with pytest.raises(InvalidInputError, match="threads"):
            create_session(tiny_model_dir / "model.onnx", [CPU], threads=threads)  # type: ignore[arg-type]
    assert create_session(tiny_model_dir / "model.onnx", [CPU], threads=2).get_providers() == [CPU]


def _fail_accelerators(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Make every session with a non-CPU provider fail to start, as a broken driver does."""
    calls: list[list[str]] = []
    real = providers.open_session

    def open_session(path: Path, options: Any, names: list[str]) -> Any:
        calls.append(list(names))
        if names != [CPU]:
            raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")
        return real(path, options, names)

    monkeypatch.setattr(providers, "open_session", open_session)
    return calls


def test_provider_that_fails_to_start_falls_back_to_cpu_with_the_reason(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = _fail_accelerators(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="edge_colbert.providers"):
        encoder = Encoder(tiny_model_dir, providers=["AzureExecutionProvider"])
    assert calls == [["AzureExecutionProvider", CPU], [CPU]]
    assert encoder.providers == [CPU]
    assert "driver version is insufficient" in caplog.text and "CPU" in caplog.text
    (vectors,) = encoder.encode_documents(["cold water"])
    assert vectors.shape[1] == 16


def test_cpu_only_request_makes_one_session(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fail_accelerators(monkeypatch)
    assert Encoder(tiny_model_dir, providers=["cpu"]).providers == [CPU]
    assert calls == [[CPU]]


def test_a_graph_no_provider_can_load_is_a_model_folder_error(tmp_path: Path) -> None:
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"\x08\x07garbage" * 20)
    with pytest.raises(ModelFolderError, match="Re-export"):
        create_session(graph, ["AzureExecutionProvider"])

"""Choose onnxruntime execution providers and open a session, falling back to the CPU.

``providers=None`` picks the best accelerator this onnxruntime build offers; an explicit list
is honoured as given. A provider that fails to start (missing driver, bad options) never
stops the program: the session is opened on the CPU instead, with a warning that says why.
Nothing here probes a GPU at import time; onnxruntime is asked only when a session opens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from edge_colbert.errors import InvalidInputError, ModelFolderError

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"

# Best first. Azure (a remote-call provider present in every wheel) is never picked
# automatically: it is not a local accelerator.
PREFERENCE = (
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "OpenVINOExecutionProvider",
    "QNNExecutionProvider",
    CPU,
)

# Short names a person may type (``--providers cuda,cpu``).
ALIASES = {
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "cpu": CPU,
}

# onnxruntime's Python errors derive straight from Exception, so they are listed one by one.
ORT_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    ValueError,
    OSError,
    *(
        value
        for value in vars(_ort_state).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ),
)


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers, in its own order."""
    return list(ort.get_available_providers())


def resolve_providers(
    requested: Sequence[str] | None, available: Sequence[str] | None = None
) -> list[str]:
    """The providers to open a session with, always ending with the CPU provider.

    ``None`` picks the best available of :data:`PREFERENCE`. An explicit list keeps its
    order; short names (``cuda``, ``cpu``) are accepted.

    Raises:
        InvalidInputError: a requested provider is unknown or not in this onnxruntime build.
    """
    offered = list(available) if available is not None else available_providers()
    if requested is None:
        best = next((name for name in PREFERENCE if name in offered), CPU)
        chosen = [best] if best == CPU else [best, CPU]
        logger.info("onnxruntime providers: %s (available: %s)", chosen, ", ".join(offered))
        return chosen
    if isinstance(requested, str):
        requested = [requested]
    chosen = []
    for name in requested:
        full = ALIASES.get(name.lower(), name) if isinstance(name, str) else name
        if full not in offered:
            raise InvalidInputError(
                f"execution provider {name!r} is not available in this onnxruntime build; "
                f"available: {', '.join(offered)}. Install the onnxruntime package for your "
                "accelerator (e.g. onnxruntime-gpu) or leave providers unset to pick one."
            )
        if full not in chosen:
            chosen.append(full)
    if not chosen:
        raise InvalidInputError(
            f"the providers list is empty; pass at least one of {', '.join(offered)} "
            "or leave it unset."
        )
    if CPU not in chosen and CPU in offered:
        chosen.append(CPU)
    return chosen


def session_options(threads: int | None) -> ort.SessionOptions:
    """Session options: ``threads`` sets the intra-op thread count (None: onnxruntime's)."""
    options = ort.SessionOptions()
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
            raise InvalidInputError(f"threads must be a positive integer, got {threads!r}")
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: onnxruntime's own warnings are noise here
    return options


def open_session(path: Path, options: ort.SessionOptions, providers: list[str]) -> Any:
    """Open an onnxruntime session. The one place a session is made, so tests can fail it."""
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def create_session(
    model_path: str | Path,
    providers: Sequence[str] | None = None,
    *,
    threads: int | None = None,
) -> Any:
    """Open ``model_path`` on the best of ``providers``, falling back to the CPU.

    Returns the ``onnxruntime.InferenceSession``; ``session.get_providers()`` says what it
    really runs on.

    Raises:
        InvalidInputError: an unknown provider or a bad thread count.
        ModelFolderError: the graph cannot be loaded even on the CPU (damaged or not ONNX).
    """
    path = Path(model_path)
    chosen = resolve_providers(providers)
    options = session_options(threads)
    if chosen != [CPU]:
        try:
            session = open_session(path, options, chosen)
        except ORT_ERRORS as error:
            logger.warning(
                "could not start %s (%s); running on the CPU instead",
                ", ".join(p for p in chosen if p != CPU),
                _first_line(error),
            )
        else:
            _warn_if_dropped(chosen, list(session.get_providers()))
            return session
    try:
        return open_session(path, session_options(threads), [CPU])
    except ORT_ERRORS as error:
        raise ModelFolderError(
            f"{path} cannot be loaded by onnxruntime {ort.__version__} "
            f"({_first_line(error)}); the graph is damaged or not ONNX. Re-export the model "
            "with `edge-colbert export` or copy the folder again."
        ) from error


def _warn_if_dropped(chosen: list[str], used: list[str]) -> None:
    """onnxruntime drops a provider that fails to initialize with only a log line of its own."""
    missing = [name for name in chosen if name != CPU and name not in used]
    if missing:
        logger.warning(
            "onnxruntime could not start %s (driver or library missing?); running on %s",
            ", ".join(missing),
            ", ".join(used),
        )


def _first_line(error: BaseException) -> str:
    """The first line of an error message, for one-line warnings."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]

"""``edge-colbert serve``: a local search page and HTTP API over one index.

Needs the server extra (``pip install "edge-colbert[server]"``: FastAPI and uvicorn). This
package imports neither at import time: :func:`require_server_extra` checks for them when the
server is about to start, and :mod:`edge_colbert.server.app` (which imports FastAPI) is loaded
only then. See ``docs/server.md``.
"""

from __future__ import annotations

import importlib.util

from edge_colbert._adapters import MissingExtraError

__all__ = ["SERVER_EXTRA_HINT", "require_server_extra"]

SERVER_EXTRA_HINT = 'the web server needs FastAPI and uvicorn: pip install "edge-colbert[server]"'


def require_server_extra() -> None:
    """Raise one clear :class:`~edge_colbert._adapters.MissingExtraError` (an ``ImportError``
    and an ``EdgeColbertError``, as every adapter's) when FastAPI or uvicorn is missing.

    Thread-safe (reads only).
    """
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(f"{' and '.join(missing)} not installed; {SERVER_EXTRA_HINT}")

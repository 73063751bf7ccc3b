"""Per-thread scratch arrays that the search's numpy kernels reuse from one call to the next.

A search allocates a few large temporaries (a block of codes widened to float32, its
similarities to the query, the centroid scores of every candidate's centroids): megabytes
each, so numpy's allocator takes each one from a fresh memory mapping and the kernel pays
its page faults, as much as the arithmetic itself (exact MaxSim over 320 SciFact-sized
documents: 16-18 ms per call with fresh arrays, 8-9 with these). The arrays belong to the
thread (``threading.local``), so searches on several threads never share one; a thread keeps
the largest it has needed, a few MiB at SciFact's sizes, until it ends.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

__all__ = ["scratch_matrix"]

_arrays = threading.local()


def scratch_matrix(name: str, rows: int, columns: int) -> npt.NDArray[np.float32]:
    """This thread's ``name`` scratch array as a C-contiguous ``[rows, columns]`` float32
    view, grown when too small. Its contents are whatever the thread's last use left; the
    caller overwrites it and returns nothing that points into it."""
    size = rows * columns
    buffer: npt.NDArray[np.float32] | None = getattr(_arrays, name, None)
    if buffer is None or buffer.size < size:
        buffer = np.empty(size, dtype=np.float32)
        setattr(_arrays, name, buffer)
    return buffer[:size].reshape(rows, columns)

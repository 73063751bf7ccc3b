"""Int8 codes for unit-length token vectors, with no stored scale.

ColBERT token vectors are L2-normalized (the model folder contract puts the normalization
inside the graph), so a vector is fully described by its direction. A token vector ``x`` is
stored as ``codes = round(x * 127 / max|x|)``: the largest component maps to +-127 and no
code is ever clipped. Reading it back divides by the codes' own length,
``codes / ||codes||``, which is again a unit vector pointing where ``x`` points, up to the
rounding of each code by at most half a step.

A per-token scale (``max|x| / 127``, two bytes as float16) would only restore a length that
is known to be 1, so it is not stored: that is 2 of every ~72 bytes per token on disk
(docs/internals.md, "Bytes per token"). Scores use the exact unit length of the codes, so
int8 MaxSim is a sum of true cosines of the reconstructed vectors.

An all-zero vector gets codes 0 and comes back as zeros (its inverse norm is 0, not inf).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_colbert.errors import InvalidInputError

__all__ = ["dequantize_int8", "inverse_norms", "inverse_norms_widened", "quantize_int8"]


def _as_matrix(vectors: npt.ArrayLike, what: str) -> npt.NDArray[np.float32]:
    """Return ``vectors`` as a 2-D float32 array, or raise :class:`InvalidInputError`."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise InvalidInputError(
            f"{what} must be a 2-D array [tokens, dim]; got {array.ndim} dimension(s) "
            f"with shape {array.shape}. Pass one document's token vectors at a time."
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidInputError(
            f"{what} must hold floating-point numbers; got dtype {array.dtype}."
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _as_codes(codes: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """Return ``codes`` as a 2-D int8 array, or raise :class:`InvalidInputError`."""
    c = np.asarray(codes)
    if c.ndim != 2 or c.dtype != np.int8:
        raise InvalidInputError(
            f"codes must be an int8 array [tokens, dim]; got dtype {c.dtype} with shape {c.shape}."
        )
    return c


def quantize_int8(vectors: npt.ArrayLike) -> npt.NDArray[np.int8]:
    """Quantize token vectors to int8 codes that keep each vector's direction.

    Args:
        vectors: float array ``[T, d]`` of token vectors (unit length, as every encoder
            output is); any float dtype is accepted and read as float32.

    Returns:
        int8 ``[T, d]``; each nonzero row has a component of magnitude 127.
        ``dequantize_int8(codes)`` is the unit vector of each row.

    Raises:
        InvalidInputError: ``vectors`` is not 2-D, not floating point, or holds NaN or
            infinity.
    """
    x = _as_matrix(vectors, "vectors")
    if x.size and not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x).all(axis=1)))
        raise InvalidInputError(
            f"{bad} of {x.shape[0]} token vectors hold NaN or infinity; the encoder output "
            "is damaged. Check the model file and its execution provider."
        )
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    # Divide by max|x| first: the ratio lies in [-1, 1] even for subnormal vectors, where
    # 127 / max|x| would overflow to infinity (and 0 * inf to NaN).
    safe = np.where(amax > 0, amax, np.float32(1.0))
    codes = np.rint(x / safe[:, None] * np.float32(127.0))
    # Rounding can land a hair past 127 for the largest component; clip is a guard.
    np.clip(codes, -127, 127, out=codes)
    result: npt.NDArray[np.int8] = codes.astype(np.int8)
    return result


def inverse_norms(codes: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """``1 / ||codes[t]||`` per token (0 for an all-zero row), the scale that makes a row unit.

    Args:
        codes: int8 ``[T, d]``.

    Returns:
        float32 ``[T]``.

    Raises:
        InvalidInputError: ``codes`` is not a 2-D int8 array.
    """
    return inverse_norms_widened(_as_codes(codes).astype(np.float32))


def inverse_norms_widened(widened: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """:func:`inverse_norms` of int8 codes already widened to float32, as MaxSim's matmul
    and :func:`dequantize_int8` need them anyway: widening once costs half as much.

    The squares are integers, summed in float32, never in int8 (which would wrap): exact
    while their sum stays under 2**24, that is for any ``d <= 1040`` (``d * 127**2``).
    """
    squares = np.einsum("ij,ij->i", widened, widened)
    out = np.zeros(widened.shape[0], dtype=np.float32)
    np.divide(np.float32(1.0), np.sqrt(squares), out=out, where=squares > 0)
    return out


def dequantize_int8(codes: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Turn int8 codes back into float32 unit token vectors.

    Args:
        codes: int8 ``[T, d]`` from :func:`quantize_int8`.

    Returns:
        float32 ``[T, d]``: ``codes[t] / ||codes[t]||`` (zeros for an all-zero row).

    Raises:
        InvalidInputError: ``codes`` is not a 2-D int8 array.
    """
    widened = _as_codes(codes).astype(np.float32)
    return widened * inverse_norms_widened(widened)[:, None]

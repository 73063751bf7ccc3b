"""Int8 round trip for token vectors, one symmetric scale per token.

A token vector ``x`` is stored as ``codes = round(x / s)`` in int8 and ``s`` in float16, with
``s`` the smallest float16 not below ``max|x| / 127``. Rounding the scale *up* to a float16
means ``|x / s| <= 127`` always holds, so no code is ever clipped and the error of every
component is at most ``s / 2``. Dequantizing uses exactly the float16 scale that was stored,
so the bound holds for what comes back from the index, not only for what went in.

An all-zero vector gets scale 0 and codes 0, and comes back as zeros.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_colbert.errors import InvalidInputError

__all__ = ["dequantize_int8", "quantize_int8"]

_FLOAT16_MAX = float(np.finfo(np.float16).max)


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


def quantize_int8(
    vectors: npt.ArrayLike,
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float16]]:
    """Quantize token vectors to int8 codes with one float16 scale per token.

    Args:
        vectors: float array ``[T, d]``; any float dtype is accepted and read as float32.

    Returns:
        ``(codes, scales)``: int8 ``[T, d]`` and float16 ``[T]``, such that
        ``dequantize_int8(codes, scales)`` differs from ``vectors`` by at most
        ``scales[t] / 2`` in every component of token ``t``.

    Raises:
        InvalidInputError: ``vectors`` is not 2-D, not floating point, holds NaN or
            infinity, or a token whose largest component exceeds what a float16 scale
            can represent (about 8.3 million).
    """
    x = _as_matrix(vectors, "vectors")
    if x.size and not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x).all(axis=1)))
        raise InvalidInputError(
            f"{bad} of {x.shape[0]} token vectors hold NaN or infinity; the encoder output "
            "is damaged. Check the model file and its execution provider."
        )
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    wanted = amax / np.float32(127.0)
    if wanted.size and float(wanted.max()) > _FLOAT16_MAX:
        raise InvalidInputError(
            f"a token vector has a component of magnitude {float(amax.max()):.4g}, beyond "
            f"the int8 + float16 range ({_FLOAT16_MAX * 127:.4g}); normalize the vectors "
            "first (ColBERT vectors are unit length)."
        )
    scales = wanted.astype(np.float16)
    # float16 rounding may land below max|x|/127, which would push a code past 127;
    # step such scales up one float16 so the bound s/2 holds without clipping.
    low = scales.astype(np.float32) < wanted
    scales[low] = np.nextafter(scales[low], np.float16(np.inf))
    safe = np.where(scales > 0, scales.astype(np.float32), np.float32(1.0))
    codes = np.rint(x / safe[:, None])
    # A rounding tie can still produce +-127.5 -> 128 in float arithmetic; clip is a guard.
    np.clip(codes, -127, 127, out=codes)
    return codes.astype(np.int8), scales


def dequantize_int8(codes: npt.ArrayLike, scales: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Turn int8 codes and per-token scales back into float32 token vectors.

    Args:
        codes: int8 ``[T, d]`` from :func:`quantize_int8`.
        scales: ``[T]`` scales (float16 as stored, or any float dtype).

    Returns:
        float32 ``[T, d]``: ``codes[t] * scales[t]``.

    Raises:
        InvalidInputError: the shapes or dtypes do not fit together.
    """
    c = np.asarray(codes)
    s = np.asarray(scales)
    if c.ndim != 2 or c.dtype != np.int8:
        raise InvalidInputError(
            f"codes must be an int8 array [tokens, dim]; got dtype {c.dtype} with shape {c.shape}."
        )
    if s.ndim != 1 or s.shape[0] != c.shape[0]:
        raise InvalidInputError(
            f"scales must be a 1-D array with one scale per token: {c.shape[0]} tokens but "
            f"scales has shape {s.shape}. The stored vectors are damaged; re-add the document."
        )
    return c.astype(np.float32) * s.astype(np.float32)[:, None]

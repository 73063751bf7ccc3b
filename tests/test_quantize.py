"""Int8 round trip: dtypes, shapes, the error bound, zero vectors and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from edge_colbert.errors import InvalidInputError
from edge_colbert.quantize import dequantize_int8, quantize_int8


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_dtypes_and_shapes() -> None:
    x = _unit_rows(np.random.default_rng(0), 17, 64)
    codes, scales = quantize_int8(x)
    assert codes.dtype == np.int8 and codes.shape == (17, 64)
    assert scales.dtype == np.float16 and scales.shape == (17,)
    back = dequantize_int8(codes, scales)
    assert back.dtype == np.float32 and back.shape == (17, 64)


@pytest.mark.parametrize("magnitude", [1.0, 1e-3, 37.0])
def test_round_trip_error_within_half_a_step(magnitude: float) -> None:
    rng = np.random.default_rng(1)
    x = _unit_rows(rng, 500, 64) * np.float32(magnitude)
    codes, scales = quantize_int8(x)
    back = dequantize_int8(codes, scales)
    step = scales.astype(np.float32)[:, None]
    assert np.all(np.abs(back - x) <= step / 2 * (1 + 1e-5) + 1e-12)
    # The stored float16 scale never pushes a code past 127, and where float16 is precise
    # (normal range, not the subnormal scales of tiny vectors) the largest code uses it fully.
    assert np.abs(codes.astype(np.int32)).max() <= 127
    if magnitude >= 1.0:
        assert np.all(np.abs(codes.astype(np.int32)).max(axis=1) >= 126)


def test_unit_vectors_keep_their_dot_products() -> None:
    rng = np.random.default_rng(2)
    x = _unit_rows(rng, 200, 64)
    back = dequantize_int8(*quantize_int8(x))
    assert np.abs(back @ x.T - x @ x.T).max() < 0.01


def test_zero_vector_round_trips_to_zero() -> None:
    x = np.zeros((3, 8), dtype=np.float32)
    x[1, 2] = 0.5
    codes, scales = quantize_int8(x)
    assert scales[0] == 0 and scales[2] == 0
    assert not codes[0].any() and not codes[2].any()
    back = dequantize_int8(codes, scales)
    assert np.isfinite(back).all()
    assert not back[0].any()
    assert back[1, 2] == pytest.approx(0.5, rel=1e-3)


def test_empty_input() -> None:
    codes, scales = quantize_int8(np.zeros((0, 64), dtype=np.float32))
    assert codes.shape == (0, 64) and scales.shape == (0,)
    assert dequantize_int8(codes, scales).shape == (0, 64)


def test_bad_input_raises() -> None:
    with pytest.raises(InvalidInputError, match="2-D"):
        quantize_int8(np.zeros(64, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="NaN"):
        quantize_int8(np.full((2, 4), np.nan, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="floating"):
        quantize_int8(np.zeros((2, 4), dtype=np.int32))
    codes, scales = quantize_int8(np.ones((3, 4), dtype=np.float32))
    with pytest.raises(InvalidInputError, match="3 tokens"):
        dequantize_int8(codes, scales[:2])

"""Int8 codes: dtypes, shapes, how close the unit vectors come back, zeros and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from edge_colbert.errors import InvalidInputError
from edge_colbert.quantize import dequantize_int8, inverse_norms, quantize_int8


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))


def test_dtypes_and_shapes() -> None:
    x = _unit_rows(np.random.default_rng(0), 17, 64)
    codes = quantize_int8(x)
    assert codes.dtype == np.int8 and codes.shape == (17, 64)
    back = dequantize_int8(codes)
    assert back.dtype == np.float32 and back.shape == (17, 64)
    assert inverse_norms(codes).dtype == np.float32 and inverse_norms(codes).shape == (17,)


@pytest.mark.parametrize("dim", [8, 64, 128])
def test_round_trip_is_a_unit_vector_within_half_a_step(dim: int) -> None:
    rng = np.random.default_rng(1)
    x = _unit_rows(rng, 500, dim)
    codes = quantize_int8(x)
    back = dequantize_int8(codes)
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), 1.0, rtol=1e-5)
    # The largest component always uses the full range, and nothing is clipped.
    assert np.all(np.abs(codes.astype(np.int32)).max(axis=1) == 127)
    # Each code is off by at most half a step of max|x| / 127; renormalizing moves the
    # vector by at most that rounding error's length, so the cosine stays near 1.
    step = np.abs(x).max(axis=1) / 127
    rounding = np.linalg.norm(codes * step[:, None] - x, axis=1)
    assert np.all(rounding <= np.sqrt(dim) * step / 2 * (1 + 1e-4))
    cosines = np.sum(back * x, axis=1)
    assert cosines.min() > 0.9995
    assert np.all(np.linalg.norm(back - x, axis=1) <= 2 * rounding + 1e-6)


@pytest.mark.parametrize("magnitude", [37.0, 1e-3, 1e-40])
def test_scale_of_the_input_does_not_matter(magnitude: float) -> None:
    """Only the direction is stored: a vector and a multiple of it get the same codes, down
    to subnormal float32 vectors (where 127 / max|x| would overflow)."""
    x = _unit_rows(np.random.default_rng(3), 50, 64)
    scaled = quantize_int8(x * np.float32(magnitude))
    unit = quantize_int8(x)
    # Subnormals keep fewer significant bits, so their codes may differ by a step or two.
    assert np.abs(scaled.astype(np.int32) - unit.astype(np.int32)).max() <= (
        0 if magnitude > 1e-30 else 2
    )
    np.testing.assert_allclose(dequantize_int8(scaled), dequantize_int8(unit), atol=0.03)


def test_unit_vectors_keep_their_dot_products() -> None:
    rng = np.random.default_rng(2)
    x = _unit_rows(rng, 200, 64)
    back = dequantize_int8(quantize_int8(x))
    assert np.abs(back @ x.T - x @ x.T).max() < 0.01


def test_inverse_norms_do_not_wrap() -> None:
    """64 codes of 127: the sum of squares (1,032,256) would wrap in int8 or int16."""
    codes = np.full((2, 64), 127, dtype=np.int8)
    codes[1] = -127
    np.testing.assert_allclose(inverse_norms(codes), 1 / (127 * 8), rtol=1e-6)


def test_zero_vector_round_trips_to_zero() -> None:
    x = np.zeros((3, 8), dtype=np.float32)
    x[1, 2] = 0.5
    codes = quantize_int8(x)
    assert not codes[0].any() and not codes[2].any()
    back = dequantize_int8(codes)
    assert np.isfinite(back).all()
    assert not back[0].any() and not back[2].any()
    assert back[1].tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    assert inverse_norms(codes)[0] == 0


def test_empty_input() -> None:
    codes = quantize_int8(np.zeros((0, 64), dtype=np.float32))
    assert codes.shape == (0, 64)
    assert dequantize_int8(codes).shape == (0, 64)


def test_bad_input_raises() -> None:
    with pytest.raises(InvalidInputError, match="2-D"):
        quantize_int8(np.zeros(64, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="NaN"):
        quantize_int8(np.full((2, 4), np.nan, dtype=np.float32))
    with pytest.raises(InvalidInputError, match="floating"):
        quantize_int8(np.zeros((2, 4), dtype=np.int32))
    with pytest.raises(InvalidInputError, match="int8"):
        dequantize_int8(np.ones((3, 4), dtype=np.int16))
    with pytest.raises(InvalidInputError, match="int8"):
        inverse_norms(np.ones(4, dtype=np.int8))

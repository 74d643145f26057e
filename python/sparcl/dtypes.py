"""Storage types of q, k, v and out, and the host conversions for half arrays.

    "float32"   numpy float32 arrays (the default)
    "float16"   numpy float16 arrays (IEEE binary16)
    "bfloat16"  numpy uint16 arrays holding bfloat16 bit patterns (the upper
                16 bits of a float32), or ml_dtypes.bfloat16 arrays when the
                optional ml_dtypes module is installed

Arrays of any other dtype are refused with TypeError (float64 included: the
binding never rounds silently; convert with .astype(np.float32) or with
to_float16 / to_bfloat16, which round to nearest even as the kernels do).
"""

import ctypes

import numpy as np

from . import _abi
from ._abi import lib
from .errors import check

try:  # optional: a real bfloat16 dtype for NumPy
    import ml_dtypes as _ml_dtypes

    BFLOAT16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    BFLOAT16 = None

_CODES = {
    "float32": _abi.SPARCL_DTYPE_F32,
    "f32": _abi.SPARCL_DTYPE_F32,
    "float16": _abi.SPARCL_DTYPE_F16,
    "f16": _abi.SPARCL_DTYPE_F16,
    "half": _abi.SPARCL_DTYPE_F16,
    "bfloat16": _abi.SPARCL_DTYPE_BF16,
    "bf16": _abi.SPARCL_DTYPE_BF16,
}
NAMES = {
    _abi.SPARCL_DTYPE_F32: "float32",
    _abi.SPARCL_DTYPE_F16: "float16",
    _abi.SPARCL_DTYPE_BF16: "bfloat16",
}
_EXPECTED = {
    _abi.SPARCL_DTYPE_F32: "float32",
    _abi.SPARCL_DTYPE_F16: "float16",
    _abi.SPARCL_DTYPE_BF16: "uint16 (bfloat16 bit patterns)"
    + (" or ml_dtypes.bfloat16" if BFLOAT16 is not None else ""),
}


def code(dtype):
    """"float32" | "float16" | "bfloat16" (or "f32", "f16", "bf16", a numpy
    dtype or type of those) -> the sparcl_dtype value."""
    if isinstance(dtype, str):
        key = dtype.lower()
    else:
        try:
            key = np.dtype(dtype).name
        except TypeError:
            key = None
    if key not in _CODES:
        raise ValueError(
            "dtype must be 'float32', 'float16' or 'bfloat16', got %r" % (dtype,)
        )
    return _CODES[key]


def accepts(dtype_code, array_dtype):
    """True if arrays of numpy dtype `array_dtype` hold the sparcl dtype."""
    if dtype_code == _abi.SPARCL_DTYPE_F32:
        return array_dtype == np.float32
    if dtype_code == _abi.SPARCL_DTYPE_F16:
        return array_dtype == np.float16
    return array_dtype == np.uint16 or (BFLOAT16 is not None and array_dtype == BFLOAT16)


def expected(dtype_code):
    """Words for the array dtype a sparcl dtype takes, for messages."""
    return _EXPECTED[dtype_code]


def _convert(fn, src, src_dtype, dst_dtype):
    a = np.ascontiguousarray(src)
    if a.dtype != src_dtype:
        raise TypeError("expected a %s array, got %s" % (np.dtype(src_dtype).name, a.dtype))
    out = np.empty(a.shape, dtype=dst_dtype)
    src_t = ctypes.POINTER(np.ctypeslib.as_ctypes_type(src_dtype))
    dst_t = ctypes.POINTER(np.ctypeslib.as_ctypes_type(dst_dtype))
    check(fn(a.ctypes.data_as(src_t), out.ctypes.data_as(dst_t), a.size), None)
    return out


def to_bfloat16(x):
    """float32 array -> uint16 bfloat16 bit patterns (round to nearest even)."""
    return _convert(lib.sparcl_convert_f32_to_bf16, x, np.float32, np.uint16)


def from_bfloat16(x):
    """uint16 bfloat16 bit patterns (or ml_dtypes.bfloat16) -> float32 (exact)."""
    a = np.asarray(x)
    if BFLOAT16 is not None and a.dtype == BFLOAT16:
        a = a.view(np.uint16)
    return _convert(lib.sparcl_convert_bf16_to_f32, a, np.uint16, np.float32)


def to_float16(x):
    """float32 array -> float16 (round to nearest even, sparcl's conversion)."""
    return _convert(lib.sparcl_convert_f32_to_f16, x, np.float32, np.uint16).view(np.float16)


def from_float16(x):
    """float16 array -> float32 (exact)."""
    a = np.ascontiguousarray(x)
    if a.dtype != np.float16:
        raise TypeError("expected a float16 array, got %s" % a.dtype)
    return _convert(lib.sparcl_convert_f16_to_f32, a.view(np.uint16), np.uint16, np.float32)

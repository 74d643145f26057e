"""sparcl: fused sparse-attention kernels (OpenCL), from Python.

A pure-Python binding of libsparcl over ctypes: NumPy arrays in and out.

    import numpy as np, sparcl
    with sparcl.Context() as ctx:
        win = sparcl.Layout.window(ctx, 1024, left=255)
        plan = sparcl.Plan(ctx, q_heads=8, kv_heads=2, q_len=1024, head_dim=64, layout=win)
        out, lse = plan.forward(q, k, v)        # float32 [B, H, S, D]

The shared library is found through $SPARCL_LIBRARY, the package's own
data, a build tree next to the checkout, or the system (see sparcl._lib).
include/sparcl.h documents every call; the classes here mirror it.
"""

from ._version import __version__
from . import _abi
from .errors import InvalidArgument, NotSupported, SparclError
from .context import Context, devices, version
from .layout import Layout
from .plan import Plan
from .reference import reference_backward, reference_forward
from .dtypes import from_bfloat16, from_float16, to_bfloat16, to_float16
from .tuning import TuningDB, default_db_path, kernel_names, kernel_space

library_path = _abi.path

__all__ = [
    "Context",
    "InvalidArgument",
    "Layout",
    "NotSupported",
    "Plan",
    "SparclError",
    "TuningDB",
    "default_db_path",
    "devices",
    "from_bfloat16",
    "from_float16",
    "kernel_names",
    "kernel_space",
    "library_path",
    "reference_backward",
    "reference_forward",
    "to_bfloat16",
    "to_float16",
    "version",
]

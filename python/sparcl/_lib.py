"""Finding and loading libsparcl.

The shared library is looked for, in this order:

1. the environment variable ``SPARCL_LIBRARY``: a path to ``libsparcl.so``
   (when it is set, nothing else is tried);
2. the package's own data: ``sparcl/_native/libsparcl.so*``, where a build
   that bundles the library copied it;
3. a build tree next to the checkout: ``../build/libsparcl.so`` relative to
   the ``python/`` folder, when the package is imported from a checkout;
4. the system: ``ctypes.util.find_library("sparcl")`` (ldconfig's cache),
   then the plain names ``libsparcl.so.0`` and ``libsparcl.so`` (the
   dynamic loader's own search, ``LD_LIBRARY_PATH`` included).

The first candidate that loads wins.  If none does, ImportError names every
place that was tried and why each failed.
"""

import ctypes
import ctypes.util
import glob
import os

ENV_VAR = "SPARCL_LIBRARY"

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    """(description, path) pairs in search order, without loading anything."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [("$%s" % ENV_VAR, env)]
    out = []
    native = sorted(glob.glob(os.path.join(_PACKAGE_DIR, "_native", "libsparcl.so*")))
    if native:
        # The shortest name is the unversioned link when there is one.
        out.extend(("package data", p) for p in sorted(native, key=len))
    else:
        out.append(("package data", os.path.join(_PACKAGE_DIR, "_native", "libsparcl.so")))
    python_dir = os.path.dirname(_PACKAGE_DIR)
    if os.path.exists(os.path.join(python_dir, "pyproject.toml")):  # imported from a checkout
        checkout = os.path.join(os.path.dirname(python_dir), "build", "libsparcl.so")
        out.append(("build tree of the checkout", checkout))
    found = ctypes.util.find_library("sparcl")
    if found:
        out.append(("system (find_library)", found))
    out.append(("system (dynamic loader)", "libsparcl.so.0"))
    out.append(("system (dynamic loader)", "libsparcl.so"))
    return out


def load():
    """Loads libsparcl and returns (ctypes.CDLL, path)."""
    tried = []
    for where, path in _candidates():
        is_name = os.sep not in path
        if not is_name and not os.path.exists(path):
            tried.append("%s: %s (no such file)" % (where, path))
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            tried.append("%s: %s (%s)" % (where, path, e))
    raise ImportError(
        "sparcl: cannot load libsparcl; looked in:\n  "
        + "\n  ".join(tried)
        + "\nBuild it (cmake --build build) or install it, or set %s to the path of "
        "libsparcl.so." % ENV_VAR
    )

"""The C-handle lifecycle shared by Context, Layout, Plan and TuningDB.

Each object owns one C handle, freed exactly once: by close(), by leaving a
`with` block, or when the object is garbage collected.  The freeing is a
weakref.finalize, so it also runs at interpreter exit, newest object first
(plans before the context they were made from), and never touches module
globals that shutdown may have cleared.
"""

import weakref


class Handle:
    """Base class: `_handle` is the c_void_p value (int) or None when closed."""

    _kind = "object"

    def _own(self, handle, free_fn):
        self._handle = handle
        self._finalizer = weakref.finalize(self, free_fn, handle)

    def _borrow(self):
        h = getattr(self, "_handle", None)
        if h is None:
            raise ValueError("this sparcl %s is closed" % self._kind)
        return h

    @property
    def closed(self):
        return getattr(self, "_handle", None) is None

    def close(self):
        """Frees the C handle now.  Idempotent."""
        fin = getattr(self, "_finalizer", None)
        self._handle = None
        if fin is not None:
            fin()

    def __enter__(self):
        self._borrow()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

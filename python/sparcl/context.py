"""sparcl.Context: a device, its queue, program cache and last error."""

import ctypes
import weakref

from . import _abi
from ._abi import lib
from ._handle import Handle
from .errors import check


def version():
    """The version string of the loaded library ("major.minor.patch")."""
    return _abi.text(lib.sparcl_version())


def devices():
    """One line per OpenCL device, "index: platform / device (type)"."""
    size = 1 << 16
    buf = ctypes.create_string_buffer(size)
    count = ctypes.c_int(0)
    check(lib.sparcl_device_list(buf, size, ctypes.byref(count)), None)
    lines = [line for line in _abi.text(buf.value).splitlines() if line.strip()]
    return lines[: count.value] if count.value else lines


_ROLES = {"user": _abi.SPARCL_TUNING_DB_USER, "shipped": _abi.SPARCL_TUNING_DB_SHIPPED}


def _role(role):
    try:
        return _ROLES[role]
    except KeyError:
        raise ValueError("role must be 'user' or 'shipped', got %r" % (role,)) from None


class Context(Handle):
    """A sparcl context on one OpenCL device.

    device: None for the default rule (SPARCL_DEVICE, else the first GPU,
    else the first CPU), or a selector: a decimal index into devices() or a
    case-insensitive substring of "platform / device".

    Layouts, plans and tuning databases made from a context keep it alive.
    close() (or leaving a `with` block) first closes the plans and tuning
    databases still open on it, which the C library requires to be freed
    before their context; layouts do not refer to it in C and stay usable.
    """

    _kind = "context"

    def __init__(self, device=None):
        if device is not None and not isinstance(device, str):
            raise TypeError("device must be a str selector or None, got %r" % (device,))
        out = ctypes.c_void_p()
        if device is None:
            status = lib.sparcl_ctx_init(ctypes.byref(out))
        else:
            status = lib.sparcl_ctx_init_device(ctypes.byref(out), device.encode())
        check(status, None)
        self._dependents = weakref.WeakSet()
        self._log_fn = None
        self._own(out.value, lib.sparcl_ctx_free)

    def _adopt(self, obj):
        """Records a plan or database that must be closed before this context."""
        self._dependents.add(obj)

    def close(self):
        if self._handle is not None:
            for obj in list(self._dependents):
                obj.close()
        super().close()

    @property
    def device(self):
        """One line on the device: "platform / device / driver"."""
        return _abi.text(lib.sparcl_ctx_device_string(self._borrow()))

    def device_info(self):
        """The device fingerprint tuning rows are keyed by, as a dict."""
        info = _abi.sparcl_device_info()
        h = self._borrow()
        check(lib.sparcl_ctx_device_info(h, ctypes.byref(info)), h)
        return _device_info_dict(info)

    @property
    def errmsg(self):
        """The message of the last failure recorded on this context."""
        return _abi.errmsg(self._borrow())

    @property
    def build_log(self):
        return _abi.text(lib.sparcl_ctx_build_log(self._borrow()))

    def memory_limit(self):
        """(host_bytes, device_bytes) in force."""
        h = self._borrow()
        host, dev = ctypes.c_uint64(), ctypes.c_uint64()
        check(lib.sparcl_ctx_memory_limit(h, ctypes.byref(host), ctypes.byref(dev)), h)
        return host.value, dev.value

    def set_memory_limit(self, host_bytes=0, device_bytes=0):
        """Limits for sparcl's own allocations; 0 means the default."""
        h = self._borrow()
        check(lib.sparcl_ctx_set_memory_limit(h, int(host_bytes), int(device_bytes)), h)

    def set_program_cache(self, folder):
        """Folder of the disk program cache; "" turns it off, None the default rule."""
        h = self._borrow()
        check(lib.sparcl_ctx_set_program_cache(h, None if folder is None else str(folder).encode()), h)

    def set_offline(self, bundle_folder):
        """Offline mode from a binary bundle; "" online, None the default rule."""
        h = self._borrow()
        arg = None if bundle_folder is None else str(bundle_folder).encode()
        check(lib.sparcl_ctx_set_offline(h, arg), h)

    def program_stats(self):
        """Counters of the program cache: memory_hits, disk_hits, builds, ..."""
        h = self._borrow()
        stats = _abi.sparcl_program_stats()
        stats.struct_size = ctypes.sizeof(stats)
        check(lib.sparcl_ctx_program_stats(h, ctypes.byref(stats)), h)
        return {name: int(getattr(stats, name)) for name, _ in stats._fields_[1:]}

    def set_tuning_db(self, role, path):
        """Which database plans read for role 'user' or 'shipped': a path,
        "" to turn that source off, None for the default rule."""
        h = self._borrow()
        arg = None if path is None else str(path).encode()
        check(lib.sparcl_ctx_set_tuning_db(h, _role(role), arg), h)

    def tuning_db_path(self, role="user"):
        """The database file plans of this context read for `role` ("" if none)."""
        h = self._borrow()
        buf = ctypes.create_string_buffer(4096)
        check(lib.sparcl_ctx_tuning_db_path(h, _role(role), buf, len(buf)), h)
        return _abi.text(buf.value)

    def set_log(self, fn):
        """Installs fn(level: int, message: str) as the log callback (None removes it).

        Called synchronously from the thread making the sparcl call.  An
        exception raised by fn is printed by ctypes and otherwise ignored."""
        h = self._borrow()
        if fn is None:
            lib.sparcl_ctx_set_log(h, _abi.LOG_FN(), None)
            self._log_fn = None
            return

        def trampoline(_user, level, message):
            fn(int(level), _abi.text(message))

        cb = _abi.LOG_FN(trampoline)
        lib.sparcl_ctx_set_log(h, cb, None)
        self._log_fn = cb  # the C side holds only the pointer

    def __repr__(self):
        if self.closed:
            return "<sparcl.Context (closed)>"
        return "<sparcl.Context %s>" % self.device


def _device_info_dict(info):
    out = {}
    for name, ctype in info._fields_:
        value = getattr(info, name)
        out[name] = _abi.text(value) if isinstance(value, bytes) else int(value)
    return out

"""Tuning databases: look up the rows plans use, export and import them."""

import ctypes

from . import _abi
from ._abi import lib
from ._handle import Handle
from .desc import Desc
from .errors import check

STATUS = {
    _abi.SPARCL_TUNING_OK: "ok",
    _abi.SPARCL_TUNING_INVALID: "invalid",
    _abi.SPARCL_TUNING_BUILD_ERROR: "build_error",
    _abi.SPARCL_TUNING_LAUNCH_ERROR: "launch_error",
    _abi.SPARCL_TUNING_WRONG: "wrong",
    _abi.SPARCL_TUNING_TIMEOUT: "timeout",
    _abi.SPARCL_TUNING_CRASH: "crash",
}


def default_db_path():
    """The default user database: $SPARCL_DB, else $XDG_CACHE_HOME/sparcl/tuning.db,
    else ~/.cache/sparcl/tuning.db."""
    buf = ctypes.create_string_buffer(4096)
    check(lib.sparcl_tuning_db_default_path(buf, len(buf)), None)
    return _abi.text(buf.value)


def kernel_names():
    """The kernel families the library knows ("attn_fwd", "attn_bwd", ...)."""
    return [_abi.text(lib.sparcl_kernel_name(i)) for i in range(lib.sparcl_kernel_count())]


def kernel_space(kernel, ctx=None):
    """The parameter space of a kernel family: {name: [choices...]}."""
    h = None if ctx is None else ctx._borrow()
    space = _abi.sparcl_param_space()
    check(lib.sparcl_kernel_space(h, kernel.encode(), ctypes.byref(space)), h)
    return {
        _abi.text(space.item[i].name): list(space.item[i].choices[: space.item[i].n_choices])
        for i in range(space.count)
    }


def _result_dict(r):
    return {
        "params": _abi.params_to_dict(r.params),
        "status": STATUS.get(r.status, str(r.status)),
        "median_ms": r.median_ms,
        "min_ms": r.min_ms,
        "max_ms": r.max_ms,
        "runs": r.runs,
        "max_err": r.max_err,
        "message": _abi.text(r.message),
    }


def _struct_dict(s):
    out = {}
    for name, _ in s._fields_:
        value = getattr(s, name)
        out[name] = _abi.text(value) if isinstance(value, bytes) else value
    return out


class TuningDB(Handle):
    """An open sparcl tuning database (SQLite).

    TuningDB(ctx, path=None, *, write=False): path None opens the default
    user database (default_db_path()); write=True creates the file and its
    folder when missing.  The database keys rows by device (the context's)
    and problem; the problem is given with the same keywords as Plan
    (q_len, head_dim, layout, causal, dtype, ...) plus kernel="attn_fwd"
    and pattern (the layout family's name: None means "dense" without a
    layout and "layout" with one).
    """

    _kind = "tuning database"

    def __init__(self, ctx, path=None, *, write=False):
        from .context import Context

        if not isinstance(ctx, Context):
            raise TypeError("ctx must be a sparcl.Context, got %r" % type(ctx).__name__)
        h = ctx._borrow()
        self.path = default_db_path() if path is None else str(path)
        flags = _abi.SPARCL_TUNING_DB_WRITE if write else _abi.SPARCL_TUNING_DB_READ
        out = ctypes.c_void_p()
        check(lib.sparcl_tuning_db_init(h, ctypes.byref(out), self.path.encode(), flags), h)
        self._ctx = ctx
        self._own(out.value, lib.sparcl_tuning_db_free)
        ctx._adopt(self)

    def _key(self, kernel, pattern, kwargs):
        h = self._ctx._borrow()
        device = _abi.sparcl_device_info()
        check(lib.sparcl_ctx_device_info(h, ctypes.byref(device)), h)
        desc = Desc(**kwargs)
        problem = _abi.sparcl_tuning_problem()
        pat = None if pattern is None else pattern.encode()
        check(lib.sparcl_tuning_problem_init(h, ctypes.byref(problem), kernel.encode(),
                                             desc.ref(), pat), h)
        return device, problem

    def problem(self, *, kernel="attn_fwd", pattern=None, **plan_kwargs):
        """The tuning problem (dict) a plan of these keywords is keyed by."""
        self._borrow()
        return _struct_dict(self._key(kernel, pattern, plan_kwargs)[1])

    def best(self, *, kernel="attn_fwd", pattern=None, **plan_kwargs):
        """The chosen row for this device and exactly this problem (the decision,
        else the fastest OK evaluation), as a dict, or None."""
        h = self._borrow()
        device, problem = self._key(kernel, pattern, plan_kwargs)
        r = _abi.sparcl_tuning_result()
        found = ctypes.c_int(0)
        check(lib.sparcl_tuning_db_best(h, ctypes.byref(device), ctypes.byref(problem),
                                        ctypes.byref(r), ctypes.byref(found)), self._ctx._borrow())
        return _result_dict(r) if found.value else None

    def fastest(self, n=5, *, kernel="attn_fwd", pattern=None, **plan_kwargs):
        """Up to n fastest OK evaluations of this device and problem, fastest first."""
        h = self._borrow()
        device, problem = self._key(kernel, pattern, plan_kwargs)
        rows = (_abi.sparcl_tuning_result * max(1, n))()
        count = ctypes.c_int(0)
        check(lib.sparcl_tuning_db_fastest(h, ctypes.byref(device), ctypes.byref(problem), n,
                                           rows, ctypes.byref(count)), self._ctx._borrow())
        return [_result_dict(rows[i]) for i in range(count.value)]

    def count(self, *, kernel=None, pattern=None, **plan_kwargs):
        """Stored evaluations: of this device and problem when problem keywords
        are given, else of every row (of `kernel`'s family when given)."""
        h = self._borrow()
        if not plan_kwargs:
            n = [0]
            self._walk(kernel, lambda *_: n.__setitem__(0, n[0] + 1))
            return n[0]
        device, problem = self._key(kernel or "attn_fwd", pattern, plan_kwargs)
        c = ctypes.c_int64(0)
        check(lib.sparcl_tuning_db_count(h, ctypes.byref(device), ctypes.byref(problem),
                                         ctypes.byref(c)), self._ctx._borrow())
        return int(c.value)

    def _walk(self, kernel, fn):
        h = self._borrow()
        failure = []

        def trampoline(_user, device, problem, result):
            try:
                fn(device.contents, problem.contents, result.contents)
                return 0
            except BaseException as e:
                failure.append(e)
                return 1

        cb = _abi.EVAL_FN(trampoline)
        k = None if kernel is None else kernel.encode()
        status = lib.sparcl_tuning_db_each_row(h, k, cb, None)
        if failure:
            raise failure[0]
        check(status, self._ctx._borrow())

    def rows(self, kernel=None):
        """Every stored evaluation (any device, hash, status) as dicts with
        'device', 'problem' and the result's fields."""
        out = []

        def add(device, problem, result):
            row = _result_dict(result)
            row["device"] = _struct_dict(device)
            row["problem"] = _struct_dict(problem)
            out.append(row)

        self._walk(kernel, add)
        return out

    def export(self, path):
        """Writes every evaluation to `path`: CSV if it ends in .csv, else SQL."""
        h = self._borrow()
        check(lib.sparcl_tuning_db_export(h, str(path).encode()), self._ctx._borrow())

    def import_(self, path):
        """Merges an export (CSV or SQL) into the database; returns the rows read."""
        h = self._borrow()
        rows = ctypes.c_int64(0)
        check(lib.sparcl_tuning_db_import(h, str(path).encode(), ctypes.byref(rows)),
              self._ctx._borrow())
        return int(rows.value)

    def __repr__(self):
        return "<sparcl.TuningDB %s%s>" % (self.path, " (closed)" if self.closed else "")

"""How the package finds libsparcl: $SPARCL_LIBRARY, the package's own copy,
the checkout's build tree, the system; and the ImportError when none loads."""

import os
import shutil
import subprocess
import sys

import sparcl
from sparcl import _lib

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(sparcl.__file__)))


def run_python(code, env_changes, pythonpath=PACKAGE_PARENT):
    env = dict(os.environ)
    env.pop("SPARCL_LIBRARY", None)
    env.update(env_changes)
    env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd="/")


def test_env_var_wins_and_a_bad_one_is_named():
    r = run_python("import sparcl", {"SPARCL_LIBRARY": "/nonexistent/libsparcl.so"})
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    assert "$SPARCL_LIBRARY: /nonexistent/libsparcl.so (no such file)" in r.stderr
    assert "set SPARCL_LIBRARY" in r.stderr
    r = run_python("import sparcl; print(sparcl.library_path)",
                   {"SPARCL_LIBRARY": sparcl.library_path})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == sparcl.library_path


def test_search_order_without_the_env_var(monkeypatch):
    monkeypatch.delenv("SPARCL_LIBRARY", raising=False)
    where = [w for w, _ in _lib._candidates()]
    assert where[0] == "package data"
    assert where[-2:] == ["system (dynamic loader)", "system (dynamic loader)"]
    in_checkout = os.path.exists(os.path.join(PACKAGE_PARENT, "pyproject.toml"))
    assert ("build tree of the checkout" in where) == in_checkout


def test_a_bundled_copy_is_loaded(tmp_path):
    pkg = tmp_path / "sparcl"
    shutil.copytree(os.path.dirname(os.path.abspath(sparcl.__file__)), pkg,
                    ignore=shutil.ignore_patterns("__pycache__", "_native"))
    (pkg / "_native").mkdir()
    shutil.copy2(sparcl.library_path, pkg / "_native" / "libsparcl.so")
    r = run_python("import sparcl; print(sparcl.library_path); print(sparcl.version())", {},
                   pythonpath=str(tmp_path))
    assert r.returncode == 0, r.stderr
    path, version = r.stdout.split()
    assert path == str(pkg / "_native" / "libsparcl.so") and version == sparcl.version()


def test_interpreter_exit_with_live_handles(tmp_path):
    # Nothing closed: the finalizers run at exit, newest first (plans before
    # their contexts), through references they hold themselves.
    code = """
import sparcl
ctx = sparcl.Context()
other = sparcl.Context()
for c in (ctx, other):
    c.set_tuning_db("user", ""); c.set_tuning_db("shipped", "")
lay = sparcl.Layout.causal(ctx, 17)
plan = sparcl.Plan(ctx, q_len=17, head_dim=72, q_heads=2, layout=lay)
db = sparcl.TuningDB(ctx, %r, write=True)
class Cycle: pass
c = Cycle(); c.self = c; c.plan = sparcl.Plan(ctx, q_len=17, head_dim=72, q_heads=2)
multi = sparcl.MultiPlan([ctx, other], q_len=17, head_dim=72, q_heads=2)
print("done")
""" % str(tmp_path / "exit.db")
    r = run_python(code, {"SPARCL_LIBRARY": sparcl.library_path})
    assert r.returncode == 0 and r.stdout.strip() == "done" and r.stderr == "", r.stderr

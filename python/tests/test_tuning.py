"""Tuning databases from Python: record, look up the row a plan uses, params
origin, export and import.  Uses databases in a temporary folder only."""

import os

import pytest

import sparcl
from conftest import quiet_context

PROBLEM = dict(q_heads=2, q_len=113, head_dim=72, causal=True)


def test_default_db_path_follows_sparcl_db(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARCL_DB", str(tmp_path / "x.db"))
    assert sparcl.default_db_path() == str(tmp_path / "x.db")


def test_kernel_families_and_spaces(ctx):
    names = sparcl.kernel_names()
    assert "attn_fwd" in names and "attn_bwd" in names
    space = sparcl.kernel_space("attn_fwd")
    assert "BLOCK_M" in space and space["BLOCK_M"] == sorted(space["BLOCK_M"])
    with pytest.raises(sparcl.InvalidArgument, match="nope"):
        sparcl.kernel_space("nope", ctx)
    defaults = sparcl.kernel_default_params(ctx, **PROBLEM)
    assert set(defaults) <= set(space)
    sparcl.check_params(ctx, defaults, **PROBLEM)
    with pytest.raises(sparcl.InvalidArgument):
        sparcl.check_params(ctx, dict(defaults, BLOCK_M=3), **PROBLEM)


def test_record_lookup_and_plan_origin(tmp_path):
    path = str(tmp_path / "tuning.db")
    with quiet_context() as ctx:
        defaults = sparcl.kernel_default_params(ctx, **PROBLEM)
        with sparcl.TuningDB(ctx, path, write=True) as db:
            assert db.count(**PROBLEM) == 0 and db.best(**PROBLEM) is None
            problem = db.problem(**PROBLEM)
            assert problem["kernel"] == "attn_fwd" and problem["q_len"] == 113
            assert problem["pattern"] == "dense" and len(problem["kernel_hash"]) == 16
            slower = dict(defaults, BLOCK_N=defaults["BLOCK_N"] * 2)
            db.record(slower, median_ms=2.0, runs=3, **PROBLEM)
            db.record(defaults, median_ms=1.0, min_ms=0.9, max_ms=1.2, runs=3, max_err=1e-6,
                      **PROBLEM)
            db.record(dict(defaults, BLOCK_M=64), status="wrong", message="off by one", **PROBLEM)
            assert db.count(**PROBLEM) == 3
            assert db.count() == 3 and db.count(kernel="attn_fwd") == 3
            best = db.best(**PROBLEM)
            assert best["params"] == defaults and best["median_ms"] == 1.0
            assert [r["median_ms"] for r in db.fastest(5, **PROBLEM)] == [1.0, 2.0]
            rows = db.rows()
            assert len(rows) == 3 and {r["status"] for r in rows} == {"ok", "wrong"}
            assert rows[0]["device"]["name"] == ctx.device_info()["name"]
            with pytest.raises(ValueError, match="status"):
                db.record(defaults, status="great", **PROBLEM)
            assert db.find(slower, **PROBLEM)["median_ms"] == 2.0
            assert db.find(dict(defaults, BLOCK_N=1), **PROBLEM) is None
            # a decision overrides "fastest": the slower set becomes the chosen row
            db.decide([{"params": defaults, "rounds": 3, "round_ms": 1.1},
                       {"params": slower, "rounds": 3, "round_ms": 1.0, "speedup": 1.1}], 1,
                      **PROBLEM)
            assert db.best(**PROBLEM)["params"] == slower
            with pytest.raises(sparcl.InvalidArgument, match="chosen|range"):
                db.decide([{"params": defaults, "round_ms": 1.0}], 5, **PROBLEM)
            db.decide([{"params": defaults, "rounds": 3, "round_ms": 1.0}], 0, **PROBLEM)
            assert db.best(**PROBLEM)["params"] == defaults

        # a context reading this database as its user database: the plan takes the row
        ctx.set_tuning_db("user", path)
        assert ctx.tuning_db_path("user") == path
        with sparcl.Plan(ctx, **PROBLEM) as plan:
            assert plan.params_source == "database"
            assert path in plan.params_origin
            assert plan.params == defaults


def test_export_import(tmp_path, ctx):
    src = str(tmp_path / "a.db")
    defaults = sparcl.kernel_default_params(ctx, **PROBLEM)
    with sparcl.TuningDB(ctx, src, write=True) as db:
        db.record(defaults, median_ms=1.5, runs=2, **PROBLEM)
        db.record(defaults, median_ms=1.0, runs=2, q_heads=2, q_len=17, head_dim=72)
        db.export(str(tmp_path / "rows.csv"))
        db.export(str(tmp_path / "rows.sql"))
    for name in ("rows.csv", "rows.sql"):
        assert os.path.getsize(tmp_path / name) > 0
        with sparcl.TuningDB(ctx, str(tmp_path / ("b-" + name + ".db")), write=True) as db:
            assert db.import_(str(tmp_path / name)) == 2
            assert db.count() == 2
            assert db.best(**PROBLEM)["median_ms"] == 1.5


def test_errors(tmp_path, ctx):
    with pytest.raises(sparcl.SparclError) as e:
        sparcl.TuningDB(ctx, str(tmp_path / "missing.db"))  # read-only: must exist
    assert type(e.value) is sparcl.SparclError  # neither InvalidArgument nor NotSupported
    assert e.value.status == -6 and e.value.status_name == "tuning database error"
    assert "missing.db" in e.value.message and "does not exist" in str(e.value)
    bad = tmp_path / "not-a-db.db"
    bad.write_text("hello")
    with pytest.raises(sparcl.SparclError, match="not-a-db"):
        sparcl.TuningDB(ctx, str(bad))
    db = sparcl.TuningDB(ctx, str(tmp_path / "c.db"), write=True)
    db.close()
    with pytest.raises(ValueError, match="closed"):
        db.count()

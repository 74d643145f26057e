"""Context, device listing, versions, settings and the handle lifecycle."""

import gc
import re
import weakref

import numpy as np
import pytest

import sparcl
from conftest import quiet_context


def test_devices_and_version():
    devs = sparcl.devices()
    assert devs and all(re.match(r"^\d+: .+ / .+", d) for d in devs)
    assert re.match(r"^\d+\.\d+\.\d+$", sparcl.version())
    assert sparcl.library_path.endswith((".so", ".so.0")) or ".so" in sparcl.library_path


def test_context_on_a_selected_device():
    first = sparcl.devices()[0].split(":")[0]
    with sparcl.Context(first) as c:
        name = sparcl.devices()[0].split(": ", 1)[1].split(" (")[0]
        assert name.split(" / ")[1] in c.device
        info = c.device_info()
        assert info["type"] in ("CPU", "GPU", "ACCELERATOR", "OTHER") and info["compute_units"] >= 1
    assert c.closed


def test_bad_selector_and_type():
    with pytest.raises(sparcl.SparclError, match="no-such-device-xyz"):
        sparcl.Context("no-such-device-xyz")
    with pytest.raises(TypeError, match="device must be a str"):
        sparcl.Context(0)


def test_settings(tmp_path):
    with quiet_context() as c:
        host, dev = c.memory_limit()
        assert host > 0 and dev > 0
        c.set_memory_limit(1 << 30, 1 << 29)
        assert c.memory_limit() == (1 << 30, 1 << 29)
        with pytest.raises(sparcl.SparclError) as e:  # 2^30 one-token blocks: far above 1 GiB
            sparcl.Layout.dense(c, 1 << 15, 1 << 15, block=1)
        assert e.value.status == -5 and "limit" in e.value.message
        c.set_program_cache(str(tmp_path / "programs"))
        c.set_program_cache(None)
        stats = c.program_stats()
        assert set(stats) == {"memory_hits", "disk_hits", "builds", "disk_writes", "disk_rejected"}
        assert c.tuning_db_path("shipped") == ""  # turned off by quiet_context
        with pytest.raises(ValueError, match="role"):
            c.tuning_db_path("system")
        with pytest.raises(sparcl.SparclError, match="does-not-exist"):
            c.set_offline(str(tmp_path / "does-not-exist"))


def test_log_callback_receives_warnings(tmp_path):
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"this is not a database" * 100)
    seen = []
    with quiet_context() as c:
        c.set_log(lambda level, msg: seen.append((level, msg)))
        c.set_tuning_db("user", str(bad))
        plan = sparcl.Plan(c, q_len=17, head_dim=72)  # the lookup skips the file with a warning
        assert plan.params_source == "default"
        assert any(level == 2 and "corrupt.db" in msg for level, msg in seen), seen
        c.set_log(None)
        n = len(seen)
        sparcl.Plan(c, q_len=17, head_dim=72)
        assert len(seen) == n


def test_garbage_collection_frees_handles():
    c = quiet_context()
    plan = sparcl.Plan(c, q_len=17, head_dim=72)
    lay = sparcl.Layout.causal(c, 17)
    fins = [plan._finalizer, lay._finalizer, c._finalizer]
    assert all(f.alive for f in fins)
    ref = weakref.ref(c)
    del c  # the plan and the layout keep the context alive
    gc.collect()
    assert ref() is not None and fins[2].alive
    del plan, lay
    gc.collect()
    assert ref() is None
    assert not any(f.alive for f in fins)


def test_layout_keeps_its_context_alive():
    c = quiet_context()
    lay = sparcl.Layout.window(c, 17, left=3)
    ref = weakref.ref(c)
    del c
    gc.collect()
    assert ref() is not None and lay.context is ref()
    mask = lay.mask()
    assert mask.sum() == lay.pairs()
    assert "density" in repr(lay) and isinstance(np.asarray(mask), np.ndarray)


def test_the_installed_package_is_tested():
    # scripts/test.sh sets SPARCL_TEST_INSTALLED=1: the tests must then import the
    # pip-installed package, not the source folder next to them
    import os

    if os.environ.get("SPARCL_TEST_INSTALLED") != "1":
        pytest.skip("not run by scripts/test.sh (SPARCL_TEST_INSTALLED=1)")
    source = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "sparcl"))
    assert os.path.dirname(os.path.abspath(sparcl.__file__)) != source
    assert "site-packages" in sparcl.__file__
    assert sparcl.library_path == os.environ["SPARCL_LIBRARY"]

"""The ctypes mirrors must agree with include/sparcl.h.

A small C program, compiled here against the header, prints sizeof and
offsetof of every field of every struct sparcl._abi mirrors (descending into
nested structs and the first element of struct arrays) and the value of every
constant it mirrors; any difference fails.  Skipped only when no C compiler
is available (or the tests run outside a checkout, without the header)."""

import ctypes
import os
import re
import shutil
import subprocess

import pytest

import sparcl
from sparcl import _abi

HERE = os.path.dirname(os.path.abspath(__file__))
INCLUDE = os.path.normpath(os.path.join(HERE, "..", "..", "include"))
HEADER = os.path.join(INCLUDE, "sparcl.h")


def _compiler():
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _fields(struct, prefix=""):
    """(C member designator, offset, size) of every field, recursively."""
    for name, ctype in struct._fields_:
        desc = getattr(struct, name)
        path = prefix + name
        yield path, desc.offset, desc.size
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
            for p, off, size in _fields(ctype, path + "."):
                yield p, desc.offset + off, size
        elif isinstance(ctype, type) and issubclass(ctype, ctypes.Array):
            elem = ctype._type_
            if isinstance(elem, type) and issubclass(elem, ctypes.Structure):
                for p, off, size in _fields(elem, path + "[0]."):
                    yield p, desc.offset + off, size


def _expected():
    """{key: value} the ctypes side claims, and the C program's text."""
    want = {}
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        '#include "sparcl.h"',
        "int main(void) {",
    ]
    for cname, struct in _abi.STRUCTS.items():
        want["sizeof %s" % cname] = ctypes.sizeof(struct)
        lines.append('printf("sizeof %s %%zu\\n", sizeof(%s));' % (cname, cname))
        for path, off, size in _fields(struct):
            want["offsetof %s.%s" % (cname, path)] = off
            want["sizeof %s.%s" % (cname, path)] = size
            lines.append('printf("offsetof %s.%s %%zu\\n", offsetof(%s, %s));'
                         % (cname, path, cname, path))
            lines.append('printf("sizeof %s.%s %%zu\\n", sizeof(((%s *)0)->%s));'
                         % (cname, path, cname, path))
    for name, value in _abi.CONSTANTS.items():
        want["value %s" % name] = value
        lines.append('printf("value %s %%lld\\n", (long long)(%s));' % (name, name))
    lines += ["return 0;", "}"]
    return want, "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) to check the ctypes mirrors against sparcl.h")
    if not os.path.exists(HEADER):
        pytest.skip("include/sparcl.h not found at %s (tests run outside a checkout)" % HEADER)
    want, source = _expected()
    d = tmp_path_factory.mktemp("abi")
    src, exe = d / "abi.c", d / "abi"
    src.write_text(source)
    subprocess.run([cc, "-std=c11", "-I", INCLUDE, str(src), "-o", str(exe)], check=True,
                   capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    got = {}
    for line in out.splitlines():
        key, value = line.rsplit(" ", 1)
        got[key] = int(value)
    return want, got


def test_every_struct_and_constant_matches_the_header(c_layout):
    want, got = c_layout
    assert set(want) == set(got)
    diff = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
    assert not diff, "ctypes (left) vs sparcl.h (right): %s" % diff


def test_check_covers_every_mirrored_struct(c_layout):
    want, _ = c_layout
    assert all("sizeof %s" % name in want for name in _abi.STRUCTS)
    # the plan descriptor's last field, so that an appended field is noticed by size
    assert "offsetof sparcl_plan_desc.previous" in want
    assert len(want) > 300


def test_struct_sizes_agree_with_the_librarys_init_sized():
    # The library accepts exactly the sizes it knows; ours must be its newest.
    d = _abi.sparcl_plan_desc()
    assert _abi.lib.sparcl_plan_desc_init_sized(ctypes.byref(d), ctypes.sizeof(d)) == 0
    assert d.struct_size == ctypes.sizeof(d)
    too_big = ctypes.create_string_buffer(ctypes.sizeof(d) + 8)
    status = _abi.lib.sparcl_plan_desc_init_sized(
        ctypes.cast(too_big, ctypes.POINTER(_abi.sparcl_plan_desc)), ctypes.sizeof(d) + 8)
    assert status == _abi.SPARCL_ERR_INVALID_ARGUMENT


def test_versions_agree():
    text = open(HEADER).read() if os.path.exists(HEADER) else None
    if text is not None:
        header = re.search(r'#define\s+SPARCL_VERSION_STRING\s+"([^"]+)"', text).group(1)
        assert sparcl.__version__ == header
    assert sparcl.version() == sparcl.__version__
    major, minor, patch = (int(x) for x in sparcl.version().split("."))
    assert _abi.lib.sparcl_version_number() == major * 1000000 + minor * 1000 + patch
    assert (major, minor, patch) == (
        _abi.SPARCL_VERSION_MAJOR, _abi.SPARCL_VERSION_MINOR, _abi.SPARCL_VERSION_PATCH)

"""Build script of the sparcl Python package (pure Python, no extension).

The version is the C library's: SPARCL_VERSION_STRING of ../include/sparcl.h
when building from a checkout, else sparcl/_version.py (which the tests keep
equal to the header).

Bundling the library (optional): SPARCL_BUNDLE_LIBRARY=/path/to/libsparcl.so
pip install ./python copies that file into the package as
sparcl/_native/libsparcl.so, which the package then loads first (after
$SPARCL_LIBRARY).  Without it the package finds libsparcl at run time.
"""

import os
import re
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    header = os.path.join(HERE, "..", "include", "sparcl.h")
    pattern = r'#define\s+SPARCL_VERSION_STRING\s+"([^"]+)"'
    if os.path.exists(header):
        with open(header) as f:
            m = re.search(pattern, f.read())
        if m:
            return m.group(1)
    with open(os.path.join(HERE, "sparcl", "_version.py")) as f:
        return re.search(r'__version__\s*=\s*"([^"]+)"', f.read()).group(1)


class BuildPy(build_py):
    def run(self):
        super().run()
        bundle = os.environ.get("SPARCL_BUNDLE_LIBRARY")
        if bundle:
            dest = os.path.join(self.build_lib, "sparcl", "_native")
            os.makedirs(dest, exist_ok=True)
            shutil.copy2(bundle, os.path.join(dest, "libsparcl.so"))


setup(version=version(), cmdclass={"build_py": BuildPy})

# The version of the sparcl C library this binding mirrors (SPARCL_VERSION_STRING
# of include/sparcl.h; setup.py reads the header when it is there, and
# tests/test_abi.py checks that the two agree).
__version__ = "0.1.0"

"""Exceptions carrying sparcl's status codes and messages."""

from . import _abi


class SparclError(Exception):
    """A sparcl call failed.

    status:      the sparcl_status code (negative int)
    status_name: sparcl_status_string(status), e.g. "invalid argument"
    message:     the context's message (sparcl_ctx_errmsg), or the status
                 string when the library left none
    """

    def __init__(self, status, message=None):
        self.status = int(status)
        self.status_name = _abi.status_string(self.status)
        self.message = message or self.status_name
        super().__init__("%s (%s, status %d)" % (self.message, self.status_name, self.status))


class InvalidArgument(SparclError, ValueError):
    """SPARCL_ERR_INVALID_ARGUMENT: a parameter or shape was wrong."""


class NotSupported(SparclError):
    """SPARCL_ERR_NOT_SUPPORTED: valid, but not on this device or plan kind."""


_BY_STATUS = {
    _abi.SPARCL_ERR_INVALID_ARGUMENT: InvalidArgument,
    _abi.SPARCL_ERR_NOT_SUPPORTED: NotSupported,
}


def error_for(status, message=None):
    """The exception object for a failed status."""
    return _BY_STATUS.get(int(status), SparclError)(status, message)


def check(status, ctx_handle=None):
    """Raises the exception for `status` unless it is SPARCL_OK.

    The message is read from the context `ctx_handle` (a c_void_p or None;
    None reads the calling thread's slot, where calls made without a
    context leave theirs)."""
    if status != _abi.SPARCL_OK:
        raise error_for(status, _abi.errmsg(ctx_handle))
    return status

"""epx: expert-parallel dispatch and combine for PyTorch, on the epx C++ core.

Importing epx initialises MPI when nothing did yet (and then finalises it at
interpreter exit); import mpi4py first to let it own MPI instead. See
docs/python.md for the API beside DeepEP's.
"""

from . import _epx
from ._epx import (  # noqa: F401  (the public names)
    Buffer,
    DispatchResult,
    Error,
    ErrorCode,
    Group,
    Handle,
    Layout,
    LowLatencyCombineResult,
    LowLatencyDispatchResult,
    LowLatencyHandle,
    __version__,
    mpi_initialized_by_epx,
    per_token_cast_back,
    per_token_cast_to_fp8,
)

# Submodules that need torch are imported on use (import epx.autograd), so
# `import epx` works where torch is absent (epx.pipeline needs no torch).
__all__ = [
    "Buffer",
    "DispatchResult",
    "Error",
    "ErrorCode",
    "Group",
    "Handle",
    "Layout",
    "LowLatencyCombineResult",
    "LowLatencyDispatchResult",
    "LowLatencyHandle",
    "per_token_cast_back",
    "per_token_cast_to_fp8",
]

"""epx: expert-parallel dispatch and combine for PyTorch, on the epx C++ core.

Importing epx initialises MPI when nothing did yet (and then finalises it at
interpreter exit); import mpi4py first to let it own MPI instead.
"""

from . import _epx
from ._epx import Error, ErrorCode, Group, __version__, mpi_initialized_by_epx  # noqa: F401

__all__ = ["Error", "ErrorCode", "Group"]

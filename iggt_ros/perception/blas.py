"""One BLAS thread for the post-processing's matrix products.

The products of post-processing are skinny (up to 1.4 M pixels x 8 channels times a handful of
prototypes): a second BLAS thread gains nothing on them, and OpenBLAS's worker threads keep spinning
after each call, taking the core the Python thread needs next. On a 2-core machine shared with other
work this made every stage of a window 2 to 3 times slower, the ones without BLAS too
(benchmarks/results/postprocess.md). The engine keeps its own threads: the limit holds only inside
the `with` block. `limit_openblas` sets the same limit for the whole process, for the other stages
(mapping, tracking, the object map), on the OpenBLAS libraries that numpy and scipy bring; PyTorch's
own thread pool (OpenMP) is a different library and keeps its setting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_controller = None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS limited to one thread inside the block (a no-op without threadpoolctl)."""
    global _controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - installed with scikit-learn, which hdbscan needs
        yield
        return
    if _controller is None:
        # built once, after the clustering libraries are imported: it sees the BLAS libraries loaded so far
        _controller = ThreadpoolController()
    with _controller.limit(limits=1, user_api="blas"):
        yield


def forget_loaded_libraries() -> None:
    """Look for BLAS libraries again at the next use (after a library that brings its own was imported)."""
    global _controller
    _controller = None


def limit_openblas(threads: int) -> None:
    """Limit the OpenBLAS libraries loaded so far (numpy's, scipy's) to `threads` for the process; 0 leaves them."""
    if threads <= 0:
        return
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover
        return
    ThreadpoolController().select(internal_api="openblas").limit(limits=threads)

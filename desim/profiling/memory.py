"""Memory accounting of one training step.

On CPU there is no allocator high-water mark, so the peak of a training step is accounted as
DESIGN §4 prescribes:

``peak = saved-for-backward bytes + parameter bytes + gradient bytes + optimizer-state bytes``.

Saved-for-backward bytes are counted with :func:`torch.autograd.graph.saved_tensors_hooks`:
every tensor autograd packs during the forward pass is recorded once per underlying storage
(views and tensors saved by several operations share a storage), and storages of parameters are
excluded because parameters are counted separately. The count depends only on shapes, dtypes and
which tensors require grad, so it can be run on the ``meta`` device (no arithmetic) and gives
the same bytes as on CPU; ``tests/test_profiling.py`` checks this. The process peak RSS is
recorded alongside as a cross-check (it is a high-water mark of the whole process, so it is an
upper bound that also holds the Python runtime and allocator slack).

On CUDA the peak is ``torch.cuda.max_memory_allocated`` over the training step.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterable
from types import TracebackType

import torch


class SavedTensorMeter:
    """Context manager counting the bytes autograd saves for backward, once per storage.

    Attributes:
        saved_bytes: bytes of distinct non-parameter storages packed so far.
        tensors: how many tensors were packed (including duplicates and parameters).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = {_storage_key(t) for t in exclude}
        self._seen: dict[int, int] = {}
        self.tensors = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    @property
    def saved_bytes(self) -> int:
        """Bytes of the distinct storages saved for backward (parameters excluded)."""
        return sum(self._seen.values())

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.tensors += 1
        key = _storage_key(t)
        if key not in self._exclude and key not in self._seen:
            self._seen[key] = t.untyped_storage().nbytes()
        return t

    def __enter__(self) -> SavedTensorMeter:
        self._hooks.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._hooks.__exit__(kind, exc, tb)


def _storage_key(t: torch.Tensor) -> int:
    # the address of the StorageImpl: shared by views, distinct per live storage (also on meta);
    # packed tensors stay alive inside the graph, so addresses cannot be reused meanwhile
    return int(t.untyped_storage()._cdata)


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Total bytes of ``tensors``."""
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in the optimizer state (Adam moments, step counters)."""
    return sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor)
    )


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (``ru_maxrss``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)

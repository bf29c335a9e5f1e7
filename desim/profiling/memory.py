"""Memory accounting of one training step.

On CPU there is no allocator high-water mark, so the peak of a training step is accounted as
DESIGN §4 prescribes:

``peak = saved-for-backward bytes + parameter bytes + gradient bytes + optimizer-state bytes``.

Saved-for-backward bytes are counted with :func:`torch.autograd.graph.saved_tensors_hooks`:
every tensor autograd packs during the forward pass is recorded once per underlying storage
(views and tensors saved by several operations share a storage) and counted if the graph still
holds it when the forward pass ends; storages of parameters are excluded because parameters
are counted separately. The count depends only on shapes, dtypes and
which tensors require grad, so it can be run on the ``meta`` device (no arithmetic) and gives
the same bytes as on CPU; ``tests/test_profiling.py`` checks this. The process peak RSS is
recorded alongside as a cross-check (it is a high-water mark of the whole process, so it is an
upper bound that also holds the Python runtime and allocator slack).

On CUDA the peak is ``torch.cuda.max_memory_allocated`` over the training step.

The methods whose memory lies in transients rather than in saved activations (gradient
checkpointing recomputes each layer in the backward pass; MeZO keeps nothing but runs two
forward passes) are measured as the **live-tensor peak** of one whole training step instead:
:func:`live_peak_bytes` runs the step under :class:`LiveTensorTracker`
(``torch.distributed._tools.mem_tracker.MemTracker``), which follows every tensor storage the
step creates or frees (parameters, buffers and optimizer state included) and keeps the
high-water mark of their sum. It works on CPU and, like the saved-tensor count, on ``meta``.
"""

from __future__ import annotations

import resource
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import torch
from torch.distributed._tools.mem_tracker import MemTracker


class SavedTensorMeter:
    """Context manager counting the bytes autograd keeps for backward, once per storage.

    A storage counts while the graph still holds one of the tensors packed from it: read
    :attr:`saved_bytes` at the end of the forward pass, with the loss alive. Packed tensors
    that the graph has already dropped do not count (a non-reentrant checkpoint saves the
    inputs of every layer it wraps, and drops those of layers outside the backward pass).

    Attributes:
        tensors: how many tensors were packed (including duplicates and parameters).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = {_storage_key(t) for t in exclude}
        self._seen: dict[int, tuple[int, list[weakref.ref[torch.Tensor]]]] = {}
        self.tensors = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    @property
    def saved_bytes(self) -> int:
        """Bytes of the distinct storages the graph still holds (parameters excluded)."""
        return sum(
            nbytes for nbytes, refs in self._seen.values() if any(r() is not None for r in refs)
        )

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.tensors += 1
        key = _storage_key(t)
        if key in self._exclude:
            return t
        entry = self._seen.get(key)
        if entry is None or not any(r() is not None for r in entry[1]):
            # new, or an address reused after the graph dropped the earlier storage
            entry = (t.untyped_storage().nbytes(), [])
            self._seen[key] = entry
        entry[1].append(weakref.ref(t))
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
    # the address of the StorageImpl: shared by views, distinct per live storage (also on meta)
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


class LiveTensorTracker(MemTracker):
    """``MemTracker`` that accepts frozen parameters and several forward passes in one step.

    ``MemTracker`` registers a gradient hook on every parameter of every module it enters,
    which torch refuses for parameters that do not require grad; a frozen parameter never
    gets a gradient, so it is tracked (as a parameter) without the hook. It also refuses a
    second forward pass of the root module, which it takes for the next iteration; MeZO runs
    two in one step, so the per-module statistics (unused here) are reset instead. The
    storages it follows and the high-water mark are kept. (Overrides private methods of
    torch 2.13's ``MemTracker``.)
    """

    def _pre_fw_hook(self, module: torch.nn.Module, inputs: Any) -> None:
        if not self._mod_tracker.is_bw and module in self.memory_tracking:
            name = self._mod_tracker.get_known_fqn(module)
            if set(self._mod_tracker.parents) - {name} == {"Global"}:
                self.reset_mod_stats()
        super()._pre_fw_hook(module, inputs)

    def _track_module_params_and_buffers(
        self, module: torch.nn.Module, install_grad_hooks: bool = True
    ) -> tuple[int, int]:
        handles = self._param_to_grad_hook_handles
        frozen = [p for p in module.parameters() if not p.requires_grad and p not in handles]
        for p in frozen:
            handles[p] = ()  # not None: the base class then installs no hook
        try:
            return super()._track_module_params_and_buffers(module, install_grad_hooks)
        finally:
            for p in frozen:
                if handles.get(p) == ():
                    del handles[p]


def live_peak_bytes(
    step: Callable[[], Any], model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None,
) -> int:
    """Peak bytes of live tensors while ``step()`` runs, summed over devices.

    Args:
        step: one training step (forward, backward, optimizer step, or a MeZO step).
        model: its parameters and buffers count from the start.
        optimizer: its state counts from the start (``None`` for MeZO; several for a step
            that trains several blocks).
    """
    tracker = LiveTensorTracker()
    optimizers = [] if optimizer is None else (
        [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer))
    tracker.track_external(model, *optimizers)
    with tracker, warnings.catch_warnings():
        # the module tracker notes backward hooks of modules already freed (harmless)
        warnings.filterwarnings("ignore", message="Module is None", category=UserWarning)
        step()
    snap = tracker.get_tracker_snapshot("peak")
    return int(sum(device["Total"] for device in snap.values()))


def quant_state_bytes(model: torch.nn.Module) -> int:
    """Bytes of 4-bit quantisation state (scales, codebook) of bitsandbytes parameters.

    The packed 4-bit weights are parameters; their absmax scales and codebook live in a
    ``quant_state`` beside them, which neither ``model.parameters()`` nor the tracker sees.
    """
    total = 0
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        while state is not None:
            for name in ("absmax", "code", "offset"):
                t = getattr(state, name, None)
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
            state = getattr(state, "state2", None)
    return total

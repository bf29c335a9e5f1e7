"""Profiling: measure what training one transformer block costs on real hardware.

This package is the only place desim imports torch, transformers and peft (the optional
``profile`` extra). Importing :mod:`desim.profiling` itself imports none of them: the modules
that need torch (:mod:`desim.profiling.models`, :mod:`~desim.profiling.memory`,
:mod:`~desim.profiling.measure`, :mod:`~desim.profiling.runner`) are imported lazily by
:func:`run_profile` and :func:`run_validation`, after :func:`require_profiling` has checked the
extra is installed. The request and the extra's check live in :mod:`desim.profiling.request`
(re-exported here), so the lazily imported modules never import this package's ``__init__``.

What is measured (DESIGN §2 "Depth"): for every block depth ``n`` (block 1 next to the
output) the forward time, the backward time with autograd stopping at block ``n``, the
optimizer step time of block ``n``, the peak memory of that training step, its counted FLOPs
and the trainable parameter count; with ``ProfileRequest.sets`` the same for sets of blocks
trained in one backward pass (:mod:`desim.profiling.sets`), which :func:`run_set_validation`
compares with the cost composed from single blocks. :func:`run_kr_scores` measures the
Kill-and-Revive gradient-norm sensitivity of LoRA modules over real training steps. See
README "Calibration" for the methods and their assumptions.
"""

from __future__ import annotations

from desim.profiling.request import (
    DEVICES,
    INSTALL_HINT,
    METHODS,
    ProfileRequest,
    ProfilingUnavailableError,
    parse_block_sets,
    require_profiling,
)

__all__ = [
    "DEVICES",
    "INSTALL_HINT",
    "METHODS",
    "ProfileRequest",
    "ProfilingUnavailableError",
    "parse_block_sets",
    "require_profiling",
    "run_count_flops",
    "run_kr_scores",
    "run_profile",
    "run_set_validation",
    "run_validation",
]


def run_profile(request: ProfileRequest, on_progress=None):  # type: ignore[no-untyped-def]
    """Profile ``request`` and return the table (a DataFrame, columns in README "Calibration").

    With ``request.sets`` the table holds one row per (point, set of blocks)
    (:data:`desim.profiling.sets.SET_COLUMNS`).

    Args:
        request: what to profile.
        on_progress: optional callback ``(done, total)`` after each repetition.
    """
    require_profiling()
    if request.sets:
        from desim.profiling.sets import set_table

        return set_table(request, on_progress=on_progress)
    from desim.profiling.runner import profile_table

    return profile_table(request, on_progress=on_progress)


def run_validation(profile, points=None, repeats=3, model_path=None, on_progress=None,  # type: ignore[no-untyped-def]  # noqa: E501
                   **kwargs):
    """Measure held-out ``points`` and compare them with the profile's fitted cost model.

    See :func:`desim.profiling.validation.validate_profile` (``speed``, ``threads``,
    ``blocks`` pass through).
    """
    require_profiling()
    from desim.profiling.validation import validate_profile

    return validate_profile(
        profile, points, repeats=repeats, model_path=model_path, on_progress=on_progress,
        **kwargs,
    )


def run_set_validation(request, profile=None, on_progress=None, speed=1.0):  # type: ignore[no-untyped-def]  # noqa: E501
    """Measure ``request.sets`` with every single block and compare with the composition.

    See :func:`desim.profiling.set_validation.validate_sets`.
    """
    require_profiling()
    from desim.profiling.set_validation import validate_sets

    return validate_sets(request, profile, on_progress=on_progress, speed=speed)


def run_kr_scores(model, steps, batch_size, seq_len, **kwargs):  # type: ignore[no-untyped-def]
    """Kill-and-Revive gradient-norm scores of LoRA modules over real training steps.

    See :func:`desim.profiling.sensitivity.kr_scores`.
    """
    require_profiling()
    from desim.profiling.sensitivity import kr_scores

    return kr_scores(model, steps, batch_size, seq_len, **kwargs)


def run_count_flops(profile, model_path=None):  # type: ignore[no-untyped-def]
    """A copy of ``profile`` with its ``flops`` column counted (:func:`~.runner.count_flops`)."""
    require_profiling()
    from desim.profiling.runner import count_flops

    return count_flops(profile, model_path)

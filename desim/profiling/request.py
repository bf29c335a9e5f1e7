"""What to profile and whether it can be: the request, the known methods and the extra's check.

Shared by :mod:`desim.profiling` (which re-exports it all) and the modules it imports lazily
(:mod:`~desim.profiling.runner`, :mod:`~desim.profiling.validation`); it imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from desim.errors import DesimError, InputError, UnknownNameError, did_you_mean

INSTALL_HINT = 'pip install ".[profile]" "torch==2.13.0+cpu"'
METHODS = ("lora", "adapter", "ia3", "full", "lora-checkpoint", "mezo", "qlora")
DEVICES = ("cpu", "cuda")


class ProfilingUnavailableError(DesimError):
    """The ``profile`` extra (torch, transformers, peft) is not installed (exit code 2)."""

    exit_code = 2


def require_profiling() -> None:
    """Check that torch, transformers and peft import; raise a clear install hint if not.

    Raises:
        ProfilingUnavailableError: naming the missing package and the install command.
    """
    for module in ("torch", "transformers", "peft"):
        try:
            __import__(module)
        except ImportError as exc:
            raise ProfilingUnavailableError(
                f"desim profile needs the optional profile extra ({module} is missing: {exc}); "
                f"install it with: {INSTALL_HINT}"
            ) from None


@dataclass(frozen=True)
class ProfileRequest:
    """What to profile: one model and method over a grid of batch sizes and sequence lengths.

    Attributes:
        model: shipped model name (``roberta-base``) or a path to a config JSON.
        method: fine-tuning method, one of :data:`METHODS`.
        batches: batch sizes (each ≥ 1).
        seq_lens: sequence lengths in tokens (each ≥ 1 and ≤ the model's positions).
        device: ``cpu`` or ``cuda``.
        repeats: timed repetitions per grid point (median and spread are reported).
        warmup: untimed repetitions before the timed ones, per grid point.
        threads: torch intra-op threads on CPU (``None``: leave torch's default).
        hardware: hardware-class name written into the table (``None``: derived from the device).
        lora_rank: LoRA rank (query and value projections).
        adapter_size: bottleneck width of the adapter method.
        seed: seed of the random weights and inputs.
        points: explicit ``(batch, seq_len)`` pairs; when given they replace the product grid
            of ``batches`` × ``seq_lens``.
        target_len: decoder target tokens per sequence of an encoder-decoder model (``None``:
            32 for T5; encoder-only models take none).
        blocks: the depths to time (empty: every block); the table then holds their rows only.
            The forward pass is the same whichever depths are timed.
        sets: sets of blocks, each trained in one backward pass (several blocks per device;
            :mod:`desim.profiling.sets`), 1-based and ascending (:func:`parse_block_sets`);
            when given, the request measures these sets instead of single blocks.
    """

    model: str
    method: str
    batches: tuple[int, ...]
    seq_lens: tuple[int, ...]
    device: str = "cpu"
    repeats: int = 3
    warmup: int = 1
    threads: int | None = 1
    hardware: str | None = None
    lora_rank: int = 8
    adapter_size: int = 64
    seed: int = 0
    points: tuple[tuple[int, int], ...] = ()
    target_len: int | None = None
    blocks: tuple[int, ...] = ()
    sets: tuple[tuple[int, ...], ...] = ()

    @property
    def grid(self) -> list[tuple[int, int]]:
        """The ``(batch, seq_len)`` pairs to measure, in order."""
        if self.points:
            return list(self.points)
        return [(b, s) for b in self.batches for s in self.seq_lens]

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UnknownNameError(
                f"--method: unknown method {self.method!r}; known: {', '.join(METHODS)}"
                f"{did_you_mean(self.method, METHODS)}"
            )
        if self.device not in DEVICES:
            raise UnknownNameError(
                f"--device: unknown device {self.device!r}; known: {', '.join(DEVICES)}"
                f"{did_you_mean(self.device, DEVICES)}"
            )
        for label, values in (("--batch", self.batches), ("--seq-len", self.seq_lens)):
            if not values:
                raise InputError(f"{label}: give at least one value")
            bad = [v for v in values if v <= 0]
            if bad:
                raise InputError(f"{label}: must be a positive integer (got {bad[0]})")
        if self.repeats < 1:
            raise InputError(f"--repeats: must be at least 1 (got {self.repeats})")
        if self.warmup < 0:
            raise InputError(f"--warmup: must be at least 0 (got {self.warmup})")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads: must be at least 1 (got {self.threads})")
        if self.target_len is not None and self.target_len < 1:
            raise InputError(f"--target-len: must be at least 1 (got {self.target_len})")
        if any(n < 1 for n in self.blocks) or len(set(self.blocks)) != len(self.blocks):
            raise InputError(f"--blocks: expected distinct depths from 1 (got {self.blocks})")
        for group in self.sets:
            if not group or any(n < 1 for n in group) or list(group) != sorted(set(group)):
                raise InputError(f"--sets: expected ascending distinct blocks from 1 (got {group})")
        if self.lora_rank < 1 or self.adapter_size < 1:
            raise InputError("lora_rank and adapter_size must be positive")


def parse_block_sets(text: str) -> tuple[tuple[int, ...], ...]:
    """Sets of blocks from ``"1,2;1,12;3,7,11;1-6"``: ``;`` between sets, ``a-b`` a range.

    Each set comes back sorted and without repeats, in the order given.

    Raises:
        InputError: a set that is empty or holds something other than positive integers.
    """
    sets = []
    for item in text.split(";"):
        blocks: set[int] = set()
        for part in filter(None, (p.strip() for p in item.split(","))):
            lo, dash, hi = part.partition("-")
            try:
                first, last = int(lo), int(hi) if dash else int(lo)
            except ValueError:
                raise InputError(
                    f"--sets: expected blocks like 1,2;3-6, got {part!r} in {item!r}"
                ) from None
            if first < 1 or last < first:
                raise InputError(f"--sets: expected blocks from 1 and ranges a-b with a <= b, "
                                 f"got {part!r}")
            blocks.update(range(first, last + 1))
        if not blocks:
            raise InputError(f"--sets: an empty set in {text!r}")
        sets.append(tuple(sorted(blocks)))
    return tuple(sets)

"""``desim profile``: measure per-block training costs, validate a profile, count its FLOPs.

The profiling extra (torch) is imported only when the command runs (:mod:`desim.profiling`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from desim.cli.consoles import err, out
from desim.errors import InputError

if TYPE_CHECKING:
    from desim.profiling import ProfileRequest

# the options of `desim profile` that take several lines, named here so that the command's
# signature reads as the list of its options
_Model = Annotated[
    str | None,
    typer.Option(help="roberta-base, roberta-large, flan-t5-small, flan-t5-base or a "
                 "config .json path."),
]
_Method = Annotated[
    str, typer.Option(help="lora, lora-checkpoint, qlora, mezo, adapter, ia3 or full.")
]
_Batch = Annotated[
    str | None, typer.Option("--batch", help="Batch size(s), comma-separated: 1,4,8.")
]
_SeqLen = Annotated[
    str | None,
    typer.Option("--seq-len", help="Sequence length(s), comma-separated (T5: encoder)."),
]
_TargetLen = Annotated[
    int | None,
    typer.Option("--target-len", help="Decoder target tokens (T5 only; default 32)."),
]
_Threads = Annotated[int, typer.Option(help="torch threads on CPU (0: torch's default).")]
_Hardware = Annotated[str | None, typer.Option(help="Hardware-class name stored in the table.")]
_Out = Annotated[
    Path | None, typer.Option("--out", help="Profile CSV to write (validation: report CSV).")
]
_Validate = Annotated[
    Path | None,
    typer.Option("--validate", help="Validate this profile on held-out batch/seq values."),
]
_Points = Annotated[
    str | None,
    typer.Option(help="BATCHxSEQ pairs, e.g. 2x96,6x192: the grid (instead of --batch x "
                 "--seq-len), or the held-out points of --validate."),
]
_CountFlops = Annotated[
    Path | None,
    typer.Option("--count-flops", help="Count the flops column of this profile (times "
                 "untouched); writes --out, or the file itself."),
]
_KrScores = Annotated[
    bool,
    typer.Option("--kr-scores", help="Measure Kill-and-Revive gradient-norm scores of the "
                 "LoRA modules over --steps real training steps (one --batch, --seq-len)."),
]


def profile(
    model: _Model = None,
    method: _Method = "lora",
    batch: _Batch = None,
    seq_len: _SeqLen = None,
    target_len: _TargetLen = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    repeats: Annotated[int, typer.Option(help="Timed repetitions per grid point.")] = 3,
    warmup: Annotated[int, typer.Option(help="Untimed repetitions per grid point.")] = 1,
    threads: _Threads = 1,
    hardware: _Hardware = None,
    out_path: _Out = None,
    validate: _Validate = None,
    points: _Points = None,
    count_flops: _CountFlops = None,
    kr_scores: _KrScores = False,
    steps: Annotated[int, typer.Option(help="Training steps of --kr-scores.")] = 20,
) -> None:
    """Measure per-block training costs (or, with --validate, the fitted model's error)."""
    from desim.profiling import ProfileRequest, require_profiling

    require_profiling()
    if validate is not None:
        _profile_validate(validate, model, points, repeats, out_path)
        return
    if count_flops is not None:
        _profile_count_flops(count_flops, model, out_path)
        return
    if kr_scores:
        _profile_kr_scores(model, batch, seq_len, target_len, steps, threads, out_path)
        return
    grid = _points(points) if points else ()
    if grid:
        batch = batch or ",".join(str(b) for b, _ in grid)
        seq_len = seq_len or ",".join(str(s) for _, s in grid)
    if model is None or batch is None or seq_len is None or out_path is None:
        raise InputError("desim profile needs --model, --batch, --seq-len (or --points) and --out")
    request = ProfileRequest(
        model=model,
        method=method,
        batches=_int_list(batch, "--batch"),
        seq_lens=_int_list(seq_len, "--seq-len"),
        points=grid,
        device=device,
        repeats=repeats,
        warmup=warmup,
        threads=threads or None,
        hardware=hardware,
        target_len=target_len,
    )
    _profile_grid(request, out_path)


def _profile_grid(request: ProfileRequest, out_path: Path) -> None:
    """Profile every grid point of ``request`` and write the table to ``out_path``."""
    from desim.io.calibration import write_profile
    from desim.profiling import run_profile

    with _profile_progress(f"profiling {request.model} {request.method}") as tick:
        table = run_profile(request, on_progress=tick)
    write_profile(table, out_path)
    out.print(f"{len(table)} rows written to {out_path}")


def _profile_count_flops(count_flops: Path, model: str | None, out_path: Path | None) -> None:
    """Count the ``flops`` column of a profile; write it to ``out_path`` or the file itself."""
    from desim.io.calibration import read_profile, write_profile
    from desim.profiling import run_count_flops

    counted = run_count_flops(read_profile(count_flops), model)
    target = out_path or count_flops
    write_profile(counted, target)
    out.print(f"flops counted for {len(counted)} rows; written to {target}")


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{option}: expected integers separated by commas, got {text!r}") from None


def _points(text: str) -> tuple[tuple[int, int], ...]:
    pts = []
    for item in text.split(","):
        b, sep, s = item.strip().partition("x")
        try:
            pts.append((int(b), int(s)))
        except ValueError:
            raise InputError(
                f"--points: expected BATCHxSEQ pairs like 2x96, got {item!r}"
            ) from None
        if not sep or pts[-1][0] <= 0 or pts[-1][1] <= 0:
            raise InputError(f"--points: expected positive BATCHxSEQ pairs, got {item!r}")
    return tuple(pts)



def _profile_validate(
    validate: Path, model: str | None, points: str | None, repeats: int, out_path: Path | None
) -> None:
    from desim.io.atomic import write_report_csv
    from desim.io.calibration import read_profile
    from desim.profiling import run_validation
    from desim.profiling.report import print_validation

    table = read_profile(validate)
    with _profile_progress("validating") as tick:
        report = run_validation(
            table, _points(points) if points else None, repeats=repeats,
            model_path=model, on_progress=tick,
        )
    print_validation(report, out)
    target = out_path or validate.with_name(validate.stem + "-validation.csv")
    write_report_csv(report.summary, target)
    stem = target.with_suffix("")
    write_report_csv(report.rows, stem.with_name(stem.name + "-rows.csv"))
    write_report_csv(report.violations, stem.with_name(stem.name + "-monotonicity.csv"))
    out.print(f"MAPE table written to {target} (per-block rows: {stem.name}-rows.csv, "
              f"depth violations: {stem.name}-monotonicity.csv)")


def _profile_kr_scores(
    model: str | None, batch: str | None, seq_len: str | None, target_len: int | None,
    steps: int, threads: int, out_path: Path | None,
) -> None:
    from desim.io.calibration import write_kr_scores
    from desim.profiling import run_kr_scores

    if model is None or batch is None or seq_len is None or out_path is None:
        raise InputError("desim profile --kr-scores needs --model, --batch, --seq-len and --out")
    b, s = _int_list(batch, "--batch"), _int_list(seq_len, "--seq-len")
    if len(b) != 1 or len(s) != 1:
        raise InputError("--kr-scores: give one --batch and one --seq-len")
    scores = run_kr_scores(model, steps, b[0], s[0], target_len=target_len,
                           threads=threads or None)
    write_kr_scores(scores, out_path)
    modules = scores["module"].nunique()
    out.print(f"{steps} steps x {modules} modules written to {out_path}")


@contextlib.contextmanager
def _profile_progress(label: str):  # type: ignore[no-untyped-def]
    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("repetitions"),
        TimeRemainingColumn(), console=err, transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


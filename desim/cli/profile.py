"""``desim profile``: measure per-block costs, validate or calibrate a profile, count its FLOPs.

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
    import pandas as pd

    from desim.profiling import ProfileRequest

# the options of `desim profile` that take several lines, named here so that the command's
# signature reads as the list of its options
_Model = Annotated[
    str | None,
    typer.Option(help="roberta-base, roberta-large, flan-t5-small, flan-t5-base or a "
                 "config .json path."),
]
_Method = Annotated[
    str | None,
    typer.Option(help="lora (default), lora-checkpoint, qlora, mezo, adapter, ia3 or full; "
                 "with --calibrate, the table to measure."),
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
_Threads = Annotated[
    int | None,
    typer.Option(help="torch threads on CPU (0: torch's default; default 1, or the table's "
                 "own with --validate and --calibrate)."),
]
_Hardware = Annotated[str | None, typer.Option(help="Hardware-class name stored in the table.")]
_Out = Annotated[
    Path | None, typer.Option("--out", help="Profile CSV to write (validation: report CSV).")
]
_Validate = Annotated[
    Path | None,
    typer.Option("--validate", help="Validate this profile (or calibrated class .toml) on "
                 "held-out batch/seq values."),
]
_Calibrate = Annotated[
    str | None,
    typer.Option("--calibrate", help="Measure this profile's speed on this host (a shipped "
                 "class name or a profile path) and write a calibrated class to --out."),
]
_Blocks = Annotated[
    str | None,
    typer.Option("--blocks", help="Depths to measure, comma-separated (--calibrate: "
                 "default 1, N/2, N)."),
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
_Sets = Annotated[
    str | None,
    typer.Option("--sets", help="Sets of blocks trained in one backward pass, e.g. "
                 "'1,2;1,12;3,7,11;1-6': measure them (with --validate: against the "
                 "single-block composition; default point 8x128)."),
]
_KrScores = Annotated[
    bool,
    typer.Option("--kr-scores", help="Measure Kill-and-Revive gradient-norm scores of the "
                 "LoRA modules over --steps real training steps (one --batch, --seq-len)."),
]


def profile(
    model: _Model = None,
    method: _Method = None,
    batch: _Batch = None,
    seq_len: _SeqLen = None,
    target_len: _TargetLen = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    repeats: Annotated[int, typer.Option(help="Timed repetitions per grid point.")] = 3,
    warmup: Annotated[int, typer.Option(help="Untimed repetitions per grid point.")] = 1,
    threads: _Threads = None,
    hardware: _Hardware = None,
    out_path: _Out = None,
    validate: _Validate = None,
    calibrate: _Calibrate = None,
    blocks: _Blocks = None,
    points: _Points = None,
    count_flops: _CountFlops = None,
    kr_scores: _KrScores = False,
    steps: Annotated[int, typer.Option(help="Training steps of --kr-scores.")] = 20,
    sets: _Sets = None,
) -> None:
    """Measure per-block training costs (--validate: the fit's error; --calibrate: its speed)."""
    from desim.profiling import ProfileRequest, parse_block_sets, require_profiling

    require_profiling()
    depths = _int_list(blocks, "--blocks") if blocks else ()
    groups = parse_block_sets(sets) if sets else ()
    if groups and (calibrate is not None or count_flops is not None or kr_scores):
        raise InputError("--sets: only to measure sets, or with --validate")
    if validate is not None:
        _profile_validate(validate, model, method, points, depths, repeats, threads, out_path,
                          groups)
        return
    if calibrate is not None:
        _profile_calibrate(calibrate, model, method, points, depths, repeats, threads, out_path)
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
    if depths:
        raise InputError("--blocks: only with --validate or --calibrate (a profile needs every "
                         "block)")
    request = ProfileRequest(
        sets=groups,
        model=model,
        method=method or "lora",
        batches=_int_list(batch, "--batch"),
        seq_lens=_int_list(seq_len, "--seq-len"),
        points=grid,
        device=device,
        repeats=repeats,
        warmup=warmup,
        threads=1 if threads is None else threads or None,
        hardware=hardware,
        target_len=target_len,
    )
    _profile_grid(request, out_path)


def _profile_grid(request: ProfileRequest, out_path: Path) -> None:
    """Profile every grid point of ``request`` and write the table to ``out_path``."""
    from desim.io.atomic import write_report_csv
    from desim.io.calibration import write_profile
    from desim.profiling import run_profile

    with _profile_progress(f"profiling {request.model} {request.method}") as tick:
        table = run_profile(request, on_progress=tick)
    if request.sets:  # a set table: its own columns (desim.profiling.sets.SET_COLUMNS)
        write_report_csv(table, out_path)
    else:
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
    validate: Path, model: str | None, method: str | None, points: str | None,
    blocks: tuple[int, ...], repeats: int, threads: int | None, out_path: Path | None,
    sets: tuple[tuple[int, ...], ...] = (),
) -> None:
    from desim.io.calibration import load_profile, read_profile
    from desim.io.hosts import read_class_file
    from desim.profiling import run_validation
    from desim.profiling.calibrate import select_table
    from desim.profiling.report import print_validation

    speed = 1.0
    if validate.suffix == ".toml":  # a calibrated class: its table, at its speed and threads
        cls = read_class_file(validate)
        table = select_table(load_profile(cls.profile), cls.measured.get("model"),
                             method or cls.measured.get("method"), str(validate))
        speed, threads = cls.speed, threads or int(cls.host.get("threads", 0)) or None
        out.print(f"validating the calibrated class {validate} ({cls.profile} at speed "
                  f"{speed:.4g}, {threads or 'the table'} thread(s))")
    else:
        table = read_profile(validate)
    if sets:
        _profile_validate_sets(validate, table, model, points, sets, repeats, threads, speed,
                               out_path)
        return
    with _profile_progress("validating") as tick:
        report = run_validation(
            table, _points(points) if points else None, repeats=repeats,
            model_path=model, on_progress=tick, speed=speed, threads=threads or None,
            blocks=blocks,
        )
    print_validation(report, out)
    _write_reports(out_path or validate.with_name(validate.stem + "-validation.csv"),
                   report.summary, {"rows": ("per-block rows", report.rows),
                                    "monotonicity": ("depth violations", report.violations)})


def _write_reports(target: Path, summary: pd.DataFrame,
                   parts: dict[str, tuple[str, pd.DataFrame]]) -> None:
    """Write a MAPE table to ``target`` and each part beside it as ``<stem>-<suffix>.csv``."""
    from desim.io.atomic import write_report_csv

    write_report_csv(summary, target)
    stem = target.with_suffix("")
    named = []
    for suffix, (what, frame) in parts.items():
        write_report_csv(frame, stem.with_name(f"{stem.name}-{suffix}.csv"))
        named.append(f"{what}: {stem.name}-{suffix}.csv")
    out.print(f"MAPE table written to {target} ({', '.join(named)})")


def _profile_validate_sets(
    validate: Path, table: pd.DataFrame, model: str | None, points: str | None,
    sets: tuple[tuple[int, ...], ...], repeats: int, threads: int | None, speed: float,
    out_path: Path | None,
) -> None:
    """Measure ``sets`` for every table of the profile and compare with the composition."""
    from desim.profiling import ProfileRequest, run_set_validation
    from desim.profiling.set_validation import SetValidation, print_set_validation

    reports = []
    for (hardware, name, method), rows in table.groupby(["hardware", "model", "method"]):
        first = rows.iloc[0]
        request = ProfileRequest(
            model=model or str(name), method=str(method), batches=(1,), seq_lens=(1,),
            points=_points(points) if points else ((8, 128),), device=str(first["device"]),
            repeats=repeats, threads=threads or int(first["threads"]) or None,
            hardware=str(hardware), lora_rank=int(first["lora_rank"]) or 8,
            target_len=int(first["target_len"]) or None, sets=sets,
        )
        with _profile_progress(f"measuring sets of {name} {method}") as tick:
            reports.append(run_set_validation(request, rows, on_progress=tick, speed=speed))
    report = SetValidation.concat(reports)
    print_set_validation(report, out)
    _write_reports(out_path or validate.with_name(validate.stem + "-sets-validation.csv"),
                   report.summary, {"rows": ("per-set rows", report.rows),
                                    "measured": ("the measured set table", report.measured)})


def _profile_calibrate(
    ref: str, model: str | None, method: str | None, points: str | None,
    blocks: tuple[int, ...], repeats: int, threads: int | None, out_path: Path | None,
) -> None:
    from desim.io.atomic import write_report_csv
    from desim.io.hosts import write_class_file
    from desim.io.shipped import shipped_models
    from desim.profiling.calibrate import SHAPE_WARN_PCT, calibrate

    # --model names the table's model (shipped), or the config of one that is not shipped
    model_path = model if model and model not in shipped_models() else None
    name = None if model_path else model
    with _profile_progress("calibrating") as tick:
        cal = calibrate(ref, model=name, method=method, points=_points(points) if points
                        else None, blocks=blocks or None, repeats=repeats, threads=threads
                        or None, model_path=model_path, on_progress=tick)
    fit, cls = cal.fit, cal.calibrated
    hw = str(cal.report.rows["hardware"].iloc[0])
    target = out_path or Path(f"{hw}-calibrated.toml")
    if target.suffix != ".toml":
        raise InputError(f"--out {target}: a calibrated class file ends in .toml")
    write_class_file(cls, target)
    rows_path = target.with_name(target.stem + "-rows.csv")
    write_report_csv(cal.report.rows, rows_path)
    m = cls.measured
    out.print(
        f"calibrated {cal.model} {cal.method} of {ref} on this host ({cls.host['device_name']}, "
        f"{cls.host['threads']} thread(s), torch {cls.host['torch_version']}): "
        f"{fit.rows} rows at {', '.join(m['points'])}, blocks {m['blocks']}"
    )
    out.print(f"  absolute latency MAPE of the profile as it is: {fit.absolute_mape_pct:.2f}%")
    out.print(f"  speed here: {fit.speed:.4f}x the profile (95% interval "
              f"{fit.speed_ci95[0]:.4f}-{fit.speed_ci95[1]:.4f})")
    out.print(f"  shape MAPE after that one scale: {fit.shape_mape_pct:.2f}%")
    if fit.shape_mape_pct > SHAPE_WARN_PCT:
        err.print(f"warning: {fit.shape_mape_pct:.1f}% is left after the best single scale: "
                  "one speed does not describe this host; re-profile the table here "
                  "(desim profile --model ... --method ... --out ...)", markup=False)
    out.print(f"calibrated class written to {target} (the measured rows: {rows_path.name}); "
              "use it with", markup=False)
    out.print(f"  desim run --set 'cost.profiles.{hw}={target}'", markup=False)
    out.print(f"and check it on held-out points with: desim profile --validate {target}",
              markup=False)


def _profile_kr_scores(
    model: str | None, batch: str | None, seq_len: str | None, target_len: int | None,
    steps: int, threads: int | None, out_path: Path | None,
) -> None:
    from desim.io.calibration import write_kr_scores
    from desim.profiling import run_kr_scores

    if model is None or batch is None or seq_len is None or out_path is None:
        raise InputError("desim profile --kr-scores needs --model, --batch, --seq-len and --out")
    b, s = _int_list(batch, "--batch"), _int_list(seq_len, "--seq-len")
    if len(b) != 1 or len(s) != 1:
        raise InputError("--kr-scores: give one --batch and one --seq-len")
    scores = run_kr_scores(model, steps, b[0], s[0], target_len=target_len,
                           threads=1 if threads is None else threads or None)
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


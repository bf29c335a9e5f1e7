"""Where costs were measured: this host's identity, calibrated hardware-class files, host match.

A profile's rows record the host they were measured on (``device_name``, ``cores``,
``threads``, ``torch_version``, ``date``). :func:`host_info` describes the host desim runs on,
without importing torch; :func:`host_match` compares the two field by field.

``desim profile --calibrate`` writes a **calibrated class file** (TOML): a hardware class that
borrows a profile at a measured speed, with the host, date and points it was measured at.
A scenario names the file wherever it names a profile::

    [cost.profiles]
    cpu-reference = "calibrated/cpu-reference.toml"

and the class is priced by the file's profile ``speed`` times faster (docs: Calibration,
"Re-calibrating on your host"). Pure apart from reading ``/proc/cpuinfo`` and the files.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from desim.errors import InputError
from desim.io.atomic import atomic_write

#: the profile columns that say where and with what a row was measured
PROVENANCE_COLUMNS = ("device", "device_name", "cores", "threads", "torch_version", "date")


def _cpuinfo(*keys: str) -> dict[str, str]:
    """The first value of each of ``keys`` in ``/proc/cpuinfo`` (those it has; none off Linux)."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in keys and key not in found:
                    found[key] = value.strip()
                    if len(found) == len(keys):
                        break
    except OSError:
        pass
    return found


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    return _cpuinfo("model name").get("model name") or platform.processor() or platform.machine()


def cpu_id() -> str:
    """The CPU's family and model numbers (``/proc/cpuinfo``: ``family 25 model 17``), or ``""``.

    Profiles record only the model name, and a cloud host may report a bare ``AMD EPYC`` for
    several generations: these numbers tell them apart.
    """
    found = _cpuinfo("cpu family", "model")
    if len(found) < 2:
        return ""
    return f"family {found['cpu family']} model {found['model']}"


def torch_version() -> str:
    """The installed torch version, read from its metadata (torch is not imported), or ``""``."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return ""


def host_info() -> dict[str, Any]:
    """The host desim runs on, as a profile row records it: CPU model, cores, torch version.

    ``cpu_id`` (:func:`cpu_id`) is recorded too; a calibrated class file carries it. Read once
    per process (every run of a sweep records it): callers get a copy.
    """
    return dict(_host())


@functools.cache
def _host() -> dict[str, Any]:
    return {"device_name": cpu_name(), "cpu_id": cpu_id(), "cores": os.cpu_count() or 0,
            "torch_version": torch_version()}


def host_match(measured: Mapping[str, Any], host: Mapping[str, Any]) -> dict[str, Any]:
    """Whether ``host`` can reproduce times ``measured`` on a CPU, field by field.

    ``measured`` holds a profile's :data:`PROVENANCE_COLUMNS` (one value each); ``host`` is
    :func:`host_info`. The CPU model and core count must be equal; the host must have at least
    the cores for the measured thread count; the torch version must be equal where torch is
    installed here (a simulating host needs no torch: then it is not compared); the CPU family
    and model numbers (``cpu_id``) must be equal where both sides know them (profile rows do
    not record them; a calibrated class does).

    Returns:
        ``{"matches": bool, "differs": [field, ...], "fields": {field: {"profile", "host"}}}``.
    """
    fields = {
        "device_name": (measured.get("device_name"), host.get("device_name")),
        "cores": (measured.get("cores"), host.get("cores")),
        "threads": (measured.get("threads"), host.get("cores")),
        "torch_version": (measured.get("torch_version"), host.get("torch_version") or None),
        "cpu_id": (measured.get("cpu_id") or None, host.get("cpu_id") or None),
    }
    differs = []
    for name, (was, now) in fields.items():
        if name == "threads":
            ok = was is None or now is None or int(was) <= int(now)
        elif name in ("torch_version", "cpu_id"):
            ok = was is None or now is None or str(was) == str(now)
        else:
            ok = was is not None and now is not None and str(was) == str(now)
        if not ok:
            differs.append(name)
    return {"matches": not differs, "differs": differs,
            "fields": {k: {"profile": v[0], "host": v[1]} for k, v in fields.items()}}


@dataclass(frozen=True)
class CalibratedClass:
    """A hardware class measured on a host: a profile at a fitted speed, with provenance.

    Attributes:
        profile: the profile it borrows: a shipped hardware-class name or an absolute path.
        speed: the class runs this many times faster than the profile (``> 0``).
        speed_ci95: a 95% interval of ``speed`` (:func:`desim.profiling.report.scale_fit`).
        host: the host it was measured on (:data:`PROVENANCE_COLUMNS` and the thread count).
        measured: the points, blocks, errors and date of the calibration.
        path: the file it was read from (``None`` before it is written).
    """

    profile: str
    speed: float
    speed_ci95: tuple[float, float]
    host: Mapping[str, Any] = field(default_factory=dict)
    measured: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None


def write_class_file(cls: CalibratedClass, path: Path) -> Path:
    """Write ``cls`` as a calibrated class file (TOML), atomically."""
    lines = [
        "# A hardware class calibrated by `desim profile --calibrate` (docs: Calibration).",
        "# Name it in a scenario where a profile goes: [cost.profiles] <class> = \"<this file>\"",
        "[class]",
        f"profile = {_toml(cls.profile)}",
        f"speed = {_toml(cls.speed)}",
        f"speed_ci95 = {_toml(list(cls.speed_ci95))}",
        "",
        "[host]",
        *(f"{k} = {_toml(v)}" for k, v in cls.host.items()),
        "",
        "[measured]",
        *(f"{k} = {_toml(v)}" for k, v in cls.measured.items()),
    ]
    if not path.parent.exists():
        raise InputError(f"{path}: directory {path.parent} does not exist")

    def write(p: str) -> None:
        Path(p).write_text("\n".join(lines) + "\n")

    atomic_write(path, write)
    return path


def read_class_file(path: str | Path) -> CalibratedClass:
    """Read a calibrated class file; a relative ``profile`` path resolves from its folder.

    Raises:
        InputError: naming the file and the missing or bad field.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise InputError(f"{p}: cannot read the calibrated class file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: not valid TOML ({exc})") from None
    section = data.get("class")
    if not isinstance(section, dict):
        raise InputError(f"{p}: no [class] section (expected profile = ..., speed = ...)")
    profile = section.get("profile")
    if not isinstance(profile, str) or not profile:
        raise InputError(f"{p}: class.profile: expected a profile name or path")
    speed = section.get("speed")
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not (
        math.isfinite(speed) and speed > 0
    ):
        raise InputError(f"{p}: class.speed: expected a positive number, got {speed!r}")
    ci = section.get("speed_ci95", [speed, speed])
    if not (isinstance(ci, list) and len(ci) == 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in ci
    )):
        raise InputError(f"{p}: class.speed_ci95: expected two numbers, got {ci!r}")
    looks_like_path = "/" in profile or profile.endswith(".csv")
    if looks_like_path and not Path(profile).is_absolute():
        profile = str((p.parent / profile).resolve())
    return CalibratedClass(
        profile=profile, speed=float(speed), speed_ci95=(float(ci[0]), float(ci[1])),
        host=dict(data.get("host", {})), measured=dict(data.get("measured", {})), path=p,
    )


def _toml(value: Any) -> str:
    """One TOML value: a string, a finite number, a boolean or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, int) else f"{float(value):.6g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def priced_with(
    pricing: Mapping[str, Mapping[str, Any]], host: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """``pricing`` with each CPU-measured class's :func:`host_match` against ``host``.

    ``pricing`` maps each hardware class to its :attr:`desim.costs.base.BlockCosts.provenance`.

    A calibrated class is matched by the host it was calibrated on (its speed was measured
    there); otherwise by the host its profile rows were measured on. Classes priced by
    another class's profile at a ``speed`` other than 1 (a borrowed, unmeasured class) and
    GPU profiles are not compared (``host_match`` ``None``).
    """
    out: dict[str, dict[str, Any]] = {}
    for hw, prov in pricing.items():
        entry = dict(prov)
        cal = prov.get("calibration")
        measured = dict(cal["host"]) if cal else dict(prov.get("measured") or {})
        borrowed = not cal and ("transfer" in prov or float(prov.get("speed", 1.0)) != 1.0)
        if measured.get("device", "cpu") != "cpu" or borrowed or not measured:
            entry["host_match"] = None
        else:
            entry["host_match"] = host_match(measured, host)
        out[hw] = entry
    return out


def host_notes(priced: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per class whose CPU profile was measured on a host unlike this one."""
    notes = []
    for hw, entry in priced.items():
        match = entry.get("host_match")
        if not match or match["matches"]:
            continue
        diffs = ", ".join(
            f"{f} {match['fields'][f]['profile']!r} there, {match['fields'][f]['host']!r} here"
            for f in match["differs"]
        )
        notes.append(
            f"note: hardware class {hw!r} is priced by a profile measured on another host "
            f"({diffs}); its times may not hold here: `desim profile --calibrate` measures "
            "this host's speed in about a minute"
        )
    return notes

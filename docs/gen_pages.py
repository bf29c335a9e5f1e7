"""Generate the reference parts of the docs site from desim itself (run by mkdocs-gen-files).

Each committed page under ``docs/`` that has generated content holds a marker line containing
``<!-- gen:NAME -->``; this script replaces that whole line with text built from the code, so
the tables cannot drift from it:

- ``scenarios.md``, ``scenario-keys``: every key of :class:`desim.scenario.model.Scenario`, walked
  recursively through its pydantic models (type, default, value in the built-in scenario, unit
  from the key's suffix, description from ``Field(description=...)``), and the keys of every
  channel and compute kind and of every cost model from its registered parameter model;
- ``allocators.md``, ``allocators``: the allocator registry as ``desim allocators`` prints it,
  and the bandwidth splits;
- ``sweeps.md``, ``figure-gallery``: the figure registry of ``desim figures``;
- ``results.md``, ``result-columns`` and ``run-json``: the columns of every result table and
  the keys of ``run.json``, taken from short runs of the built-in scenario;
- ``calibration.md``, ``profile-columns`` and ``profile-sheet:FILE``: the profile format from
  ``desim.io.calibration.PROFILE_COLUMNS`` and a data sheet per shipped profile, read from the CSV;
- ``cli.md``, ``cli-reference``: the ``--help`` text of every command of the typer app;
- ``api.md``, ``api-reference``: mkdocstrings entries for the public API.

Every generator fails loudly (and so does ``mkdocs build --strict``) when the code grows
something the docs do not describe: a result column or ``run.json`` key without a description,
a shipped profile without a section, a scenario field without a description.
"""

from __future__ import annotations

import importlib
import re
import textwrap
import tomllib
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mkdocs_gen_files
import pandas as pd
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


# ---------------------------------------------------------------------------------------------
# page editing


def fill(page: str, marker: str, text: str) -> None:
    """Replace the one line of ``docs/<page>`` that holds ``<!-- gen:<marker> -->``."""
    with mkdocs_gen_files.open(page, "r") as fh:
        lines = fh.read().split("\n")
    tag = f"<!-- gen:{marker} -->"
    hits = [i for i, line in enumerate(lines) if tag in line]
    if len(hits) != 1:
        raise RuntimeError(f"docs/{page}: expected one line with {tag}, found {len(hits)}")
    lines[hits[0]] = text.rstrip("\n")
    with mkdocs_gen_files.open(page, "w") as fh:
        fh.write("\n".join(lines))


def public(name: str, *modules: str) -> Any:
    """``desim.<name>`` when the package exports it, else the first module that has it."""
    import desim

    if name in getattr(desim, "__all__", ()):
        return getattr(desim, name)
    for module in modules:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:  # the module moved: try the next one
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    raise RuntimeError(f"docs/gen_pages.py: cannot find {name} in desim or {modules}")


def cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# values and units

# longest suffix first; STYLE §5 puts the unit in every key's name
UNIT_SUFFIXES = (
    ("_dbm_per_hz", "dBm/Hz"),
    ("_flops_per_s", "FLOP/s"),
    ("_per_s_per_w", "tokens/J"),
    ("_ghz", "GHz"),
    ("_hz", "Hz"),
    ("_kmh", "km/h"),
    ("_bps", "bit/s"),
    ("_bytes", "B"),
    ("_bits", "bit"),
    ("_dbm", "dBm"),
    ("_db", "dB"),
    ("_wall_s", "s (wall clock)"),
    ("_s", "s"),
    ("_m", "m"),
    ("_w", "W"),
    ("_j", "J"),
)
# names without a unit suffix whose unit is still worth stating
UNIT_NAMES = {
    "batch_size": "samples",
    "seq_len": "tokens",
    "target_len": "tokens",
    "rounds": "rounds",
    "round": "rounds",
    "local_steps": "steps",
    "kr_patience": "rounds",
    "kr_revive_period": "rounds",
    "speed_factor": "× profile",
    "speed": "× profile",
    "dropout_rate": "per device and round",
    "flops": "FLOP",
    "samples": "samples",
    "tokens": "tokens",
    "block": "block index",
    "bottleneck_block": "block index",
    "mfu": "fraction",
    "granularity": "ratio",
}


def unit_of(name: str) -> str:
    """The unit a key's name states (STYLE §5), or an empty string."""
    if name in UNIT_NAMES:
        return UNIT_NAMES[name]
    for suffix, unit in UNIT_SUFFIXES:
        if name.endswith(suffix):
            return unit
    return ""


def number(value: float) -> str:
    """A float as a TOML-style literal: ``20e6`` style for large and small magnitudes."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    text = f"{value:.6g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return repr(float(value))


def literal(value: Any) -> str:
    """A value written as in a scenario TOML."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return number(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{k} = {literal(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return str(value)


def code(text: str) -> str:
    """Inline code, or plain text for words such as ``unset`` and ``required``."""
    return text if text in ("unset", "required", "") else f"`{text}`"


# ---------------------------------------------------------------------------------------------
# scenario keys


@dataclass
class Section:
    """One TOML table of the scenario: its header, the model behind it and a note."""

    header: str
    anchor: str
    model: type[BaseModel]
    note: str = ""


def is_model(tp: Any) -> bool:
    """Whether ``tp`` is a pydantic model class."""
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def strip_annotated(tp: Any) -> tuple[Any, list[Any]]:
    """The bare type and the constraint objects of an ``Annotated`` type."""
    constraints: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        base, *meta = typing.get_args(tp)
        for m in meta:
            constraints += list(m.metadata) if isinstance(m, FieldInfo) else [m]
        tp = base
    return tp, constraints


def bounds(constraints: list[Any]) -> str:
    """Numeric bounds as text (``> 0``, ``in [1, 4096]``)."""
    lo = hi = None
    for c in constraints:
        for attr, side, sym in (("gt", "lo", "("), ("ge", "lo", "["), ("lt", "hi", ")"),
                                ("le", "hi", "]")):
            v = getattr(c, attr, None)
            if v is not None:
                if side == "lo":
                    lo = (sym, v)
                else:
                    hi = (sym, v)
        if getattr(c, "min_length", None):
            return f"at least {c.min_length} entries" if c.min_length > 1 else "non-empty"

    def show(v: Any) -> str:
        return literal(float(v)) if isinstance(v, float) else literal(v)

    if lo and hi:
        return f"in {lo[0]}{show(lo[1])}, {show(hi[1])}{hi[0]}"
    if lo:
        return f"{'>' if lo[0] == '(' else '≥'} {show(lo[1])}"
    if hi:
        return f"{'<' if hi[0] == ')' else '≤'} {show(hi[1])}"
    return ""


def type_text(tp: Any, links: dict[type, str]) -> str:
    """A readable type: literals listed, models linked to their section."""
    tp, constraints = strip_annotated(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        values = typing.get_args(tp)
        if len(values) == 1:
            return f"`{literal(values[0])}`"
        return "one of " + ", ".join(f"`{literal(v)}`" for v in values)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        optional = type(None) in members
        members = tuple(m for m in members if m is not type(None))
        tables = [m for m in members if is_model(m)]
        names = []
        for m in members:
            text = type_text(m, links)
            if text not in names and not (len(tables) > 1 and m in tables):
                names.append(text)
        if len(tables) > 1:  # alternative table forms, named by their discriminator
            names.append("a table: " + ", ".join(
                f"[{tag_of(m).split(' = ')[-1].strip(chr(34))}](#{links.get(m, '')})"
                for m in tables))
        text = " or ".join(names)
        return f"{text}, optional" if optional else text
    if origin in (tuple, list):
        item = typing.get_args(tp)[0]
        inner = type_text(strip_annotated(item)[0], links)
        text = f"array of {inner}"
        extra = bounds(constraints)
        return f"{text} ({extra})" if extra else text
    if origin is dict:
        key, value = typing.get_args(tp)
        return f"table of {type_text(key, links)} → {type_text(value, links)}"
    if is_model(tp):
        return f"[table](#{links[tp]})" if tp in links else "table"
    name = {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp)
    text = name or getattr(tp, "__name__", str(tp))
    extra = bounds(constraints)
    return f"{text} {extra}" if extra else text


def models_in(tp: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """The models a field's type holds, each with how it nests (``""``, ``[]``, ``.<key>``)."""
    tp, _ = strip_annotated(tp)
    origin = typing.get_origin(tp)
    if is_model(tp):
        yield "", tp
    elif origin in (typing.Union, types.UnionType):
        for m in typing.get_args(tp):
            yield from models_in(m)
    elif origin in (tuple, list):
        for how, m in models_in(typing.get_args(tp)[0]):
            yield "[]" + how, m
    elif origin is dict:
        for how, m in models_in(typing.get_args(tp)[1]):
            yield ".<name>" + how, m


def default_of(field: FieldInfo) -> str:
    """The field's default as TOML, ``required`` or ``table`` for a nested section."""
    if field.default_factory is not None:
        return literal(field.default_factory())  # type: ignore[call-arg]
    if field.default is PydanticUndefined:
        return "required"
    if isinstance(field.default, BaseModel):
        return ""
    return literal(field.default)


def lookup(data: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key of the built-in scenario, or ``None``."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def tag_of(model: type[BaseModel]) -> str:
    """``key = "value"`` of the model's one single-value literal field (its discriminator)."""
    for name, field in model.model_fields.items():
        tp = strip_annotated(field.annotation)[0]
        if typing.get_origin(tp) is typing.Literal and len(typing.get_args(tp)) == 1:
            return f"{name} = {literal(typing.get_args(tp)[0])}"
    return model.__name__


def field_type(field: FieldInfo) -> Any:
    """The field's annotation with the constraints pydantic moved into ``metadata``."""
    if not field.metadata:
        return field.annotation
    return typing.Annotated[(field.annotation, *field.metadata)]


def scenario_sections(scenario: type[BaseModel]) -> tuple[list[Section], dict[type, str]]:
    """Every table of the scenario, depth first, and the anchor of each model."""
    sections: list[Section] = []
    links: dict[type, str] = {}

    def visit(model: type[BaseModel], header: str, anchor: str, note: str = "") -> None:
        if model in links:
            return
        links[model] = anchor
        sections.append(Section(header, anchor, model, note))
        for name, field in model.model_fields.items():
            found = list(models_in(field.annotation))
            alternatives = [m for how, m in found if how == ""]
            key = f"{header}.{name}" if header else name
            for how, sub in found:
                if how == "" and len(alternatives) > 1:  # one of several table forms
                    tag = tag_of(sub)
                    visit(sub, "{ " + tag + ", ... }", f"{sub.__name__.lower()}",
                          "a table in place of a number")
                elif how == "":
                    visit(sub, key, key.replace(".", "-"))
                elif how == "[]":
                    visit(sub, f"[{key}]", key.replace(".", "-") + "-entry",
                          f"each entry of `{key}`")
                else:
                    visit(sub, f"{key}.<name>", key.replace(".", "-") + "-entry",
                          f"the value of each entry of `{key}`")

    for name, field in scenario.model_fields.items():
        for how, sub in models_in(field.annotation):
            if how == "":
                visit(sub, name, name)
            else:
                visit(sub, f"{name}.<class>", f"{name}-entry",
                      f"the value of each entry of `[{name}]`, keyed by hardware class")
    return sections, links


# sections whose every key but ``kind`` is a parameter of the registered kind it names
KIND_SECTIONS = {
    "channel": ("CHANNEL_KINDS", "desim.world.channel_kinds"),
    "compute": ("COMPUTE_KINDS", "desim.world.compute_kinds"),
    "scheme": ("SCHEMES", "desim.schemes"),
}
# the key that names the component, where it is not ``kind``
SELECTOR = {"scheme": "name"}
KEY_HEADER = ["key", "type", "default", "built-in scenario", "unit", "description"]


def kind_keys(header: str, builtin: dict[str, Any], links: dict[type, str]) -> list[str]:
    """One table per registered kind of a section: its keys, from the kind's own model."""
    registry = public(*KIND_SECTIONS[header])
    selector = SELECTOR.get(header, "kind")
    chosen = lookup(builtin, f"{header}.{selector}")
    out = []
    for kind, entry in registry.items():
        text = entry.description
        out += [f"#### `{selector} = \"{kind}\"` {{ #{header}-{kind} }}", "",
                f"{text[0].upper()}{text[1:]}.", ""]
        rows = []
        for name, field in entry.params.model_fields.items():
            if field.description is None:
                raise RuntimeError(f"{header} kind {kind!r}: key {name} has no description: "
                                   f"add Field(description=...) in {entry.params.__module__}")
            in_default = lookup(builtin, f"{header}.{name}") if kind == chosen else None
            # an unset default the kind's model itself refuses: the key must be given
            required = field.default is None and field.validate_default
            rows.append([f"`{name}`", type_text(field_type(field), links),
                         "required" if required else code(default_of(field)),
                         "" if in_default is None else code(literal(in_default)),
                         unit_of(name), field.description])
        out += [table(KEY_HEADER, rows) if rows else "No other keys.", ""]
    return out


def cost_model_keys(builtin: dict[str, Any], links: dict[type, str]) -> list[str]:
    """One table per registered cost model (``cost.model``): its keys, from its own model.

    A key whose values are tables (``profiles``) gets a table of its own after the model's.
    """
    registry = public("COST_MODELS", "desim.costs.registry")
    chosen = lookup(builtin, "cost.model")
    out = []
    for name in sorted(registry, key=lambda n: n != chosen):  # the built-in scenario's first
        entry = registry[name]
        text = entry.description
        out += [f"#### `model = \"{name}\"` {{ #cost-{name} }}", "",
                f"{text[0].upper()}{text[1:]}.", ""]
        rows, nested = [], []
        for key, field in entry.params.model_fields.items():
            if field.description is None:
                raise RuntimeError(f"cost model {name!r}: key {key} has no description: "
                                   f"add Field(description=...) in {entry.params.__module__}")
            for how, sub in models_in(field.annotation):
                if sub not in links:
                    links[sub] = f"cost-{key}" + ("-entry" if how else "")
                    nested.append((f"cost.{key}" + (".<class>" if how else ""), sub))
            in_default = lookup(builtin, f"cost.{key}") if name == chosen else None
            rows.append([f"`{key}`", type_text(field_type(field), links),
                         code(default_of(field)),
                         "" if in_default is None else code(literal(in_default)),
                         unit_of(key), field.description])
        out += [table(KEY_HEADER, rows) if rows else "No other keys.", ""]
        for header, sub in nested:
            doc = rst_to_md((sub.__doc__ or "").strip())
            out += [f"##### `[{header}]` {{ #{links[sub]} }}", "", doc, "",
                    table(KEY_HEADER, [[f"`{k}`", type_text(field_type(f), links),
                                        code(default_of(f)), "", unit_of(k), f.description]
                                       for k, f in sub.model_fields.items()]), ""]
    return out


def scenario_keys() -> str:
    """The generated scenario reference: one table per section."""
    scenario = public("Scenario", "desim.scenario.model")
    builtin = tomllib.loads(Path(public("default_scenario_path", "desim.io.shipped")()).read_text())
    sections, links = scenario_sections(scenario)
    top = []
    for name, field in scenario.model_fields.items():
        sub = [m for how, m in models_in(field.annotation)]
        anchor = links[sub[0]] if sub else name
        required = " (required)" if field.is_required() else ""
        top.append([f"[`[{name}]`](#{anchor})", f"{field.description or ''}{required}"])
    out = ["### Sections", "", table(["section", "what it sets"], top)]
    for sec in sections:
        doc = (sec.model.__doc__ or "").strip()
        title = f"`[{sec.header}]`" if not sec.header.startswith("{") else f"`{sec.header}`"
        out += [f"### {title} {{ #{sec.anchor} }}", ""]
        if sec.note:
            out += [f"*{sec.note[0].upper()}{sec.note[1:]}.*", ""]
        if doc:
            out += [rst_to_md(doc), ""]
        rows = []
        for name, field in sec.model.model_fields.items():
            if field.description is None:
                raise RuntimeError(f"scenario field {sec.header}.{name} has no description: "
                                   f"add Field(description=...) in {sec.model.__module__}")
            nested = field.default_factory is None and isinstance(field.default, BaseModel)
            # a field that is a section of its own shows its values there, not here
            own_section = [m for how, m in models_in(field.annotation) if how == ""]
            nested = nested or len(own_section) == 1
            dotted = f"{sec.header}.{name}" if not sec.header.startswith(("{", "[")) else ""
            in_default = "" if nested or not dotted or "<" in dotted else lookup(builtin, dotted)
            rows.append([
                f"`{name}`",
                type_text(field_type(field), links),
                "" if nested else code(default_of(field)),
                "" if in_default in ("", None) else code(literal(in_default)),
                unit_of(name),
                field.description,
            ])
        out += [table(["key", "type", "default", "built-in scenario", "unit", "description"],
                      rows), ""]
        if sec.header in KIND_SECTIONS:  # the keys of each kind, from its registry
            out += kind_keys(sec.header, builtin, links)
        if sec.header == "cost":  # the keys of each cost model, from its registry
            out += cost_model_keys(builtin, links)
    return "\n".join(out)


# README sections that code docstrings cite, and the page that now holds each
README_SECTIONS = {
    "Calibration": "calibration.md",
    "Schemes, methods and energy": "schemes.md",
    "Energy and efficiency": "schemes.md#energy-and-efficiency",
    "Defaults": "scenarios.md#defaults-of-the-built-in-scenario-and-their-sources",
    "Exit codes": "cli.md#exit-codes",
    "Faults and failures": "faults.md",
}


def rst_to_md(text: str) -> str:
    """A docstring's reST-ish markup as Markdown (double backticks, roles, dedent).

    A Google-style ``Attributes:`` block is dropped (the key tables hold the same facts), and
    a citation of a README section becomes a link to the page that now holds it.
    """
    first, _, rest = text.partition("\n")
    text = first + "\n" + textwrap.dedent(rest)
    text = text.split("\nAttributes:\n")[0]
    text = re.sub(r":(?:func|class|mod|data|meth|attr):`~?([^`]+)`", r"`\1`", text)
    for section, page in README_SECTIONS.items():
        text = text.replace(f'README "{section}"', f"[{section}]({page})")
    return text.replace("``", "`").rstrip()


# ---------------------------------------------------------------------------------------------
# allocators and figures


def allocators() -> str:
    """The registry as ``desim allocators`` prints it, then the bandwidth splits."""
    registry = public("ALLOCATORS", "desim.allocators")
    rows = []
    for name in sorted(registry):
        info = registry[name]
        params = "<br>".join(f"`{k}: {v}`" for k, v in info.parameters().items()) or "none"
        rows.append([f"`{name}`", info.description, params])
    out = [table(["name", "description", "parameters"], rows)]
    splits = public("SPLITS", "desim.allocators", "desim.allocators.bandwidth")
    out += ["", "Bandwidth splits (`bandwidth = ...`):", ""]
    out += [table(["split", "what it does"], [
        [f"`{n}`", rst_to_md((fn.__doc__ or "").strip().split("\n")[0])]
        for n, fn in sorted(splits.items())
    ])]
    return "\n".join(out)


GALLERY = DOCS / "gallery"
"""Committed PNGs of the gallery: ``docs/gallery/<figure>.png`` (how to redraw: sweeps.md)."""

# what each figure shows, as read from its committed PNG; a figure without an entry gets its
# caption alone (figures are added in parallel, so a missing note must not fail the build)
GALLERY_NOTES = {
    "p-devices": (
        "The paper's setting: jbba and jbba-exact lie on one line at the bottom, crunch+equal and "
        "bottleneck-exact (one line: CRUNCH is exact) a few per cent above, then depth-unaware "
        "and greedy, with random and offload near 5 s. Latency falls from K = 12, where every "
        "device must train a block, to K = 50. Intervals are over seeds, each with its own "
        "population; the paired comparisons are in p-claims."),
    "p-bandwidth": (
        "The same order at every bandwidth; LoRA's gradients are small, so more band helps "
        "little (about 10% from 5 to 80 MHz), and offload, which sends token ids, not at all."),
    "p-claims": (
        "Every claim of the paper holds in its setting: crunch+equal equals the exact P1 "
        "optimum and jbba the exact P2 optimum in every run; jbba is 4.8% ± 1.2 below "
        "crunch+equal, and both are 16–69% below greedy, depth-unaware, random and offload. "
        "Compare j-reduction: under trace replay jbba realises about 7% more than crunch+equal."),
    "a-devices": (
        "Latency falls steeply from K = 12 (every device must train a block, so the slowest one "
        "sets the pace) to K = 50, where jbba, jbba-exact and crunch+equal plan the lowest "
        "latency. Realised, greedy and crunch+equal catch up with jbba: jbba plans tightly on "
        "the round-start snapshot and the traces move during the round. random and offload stay "
        "flat, far above; the intervals are wide because seeds differ in their populations."),
    "b-bandwidth": (
        "More bandwidth helps every allocator that uploads gradients, most below 4 MHz; offload "
        "sends only token ids and stays flat near 5 s. jbba and jbba-exact coincide throughout."),
    "c-memory": (
        "Small budgets keep devices off the deep blocks and raise the latency of every "
        "depth-aware allocator; above a mean of about 2 GB the budget no longer binds."),
    "d-heterogeneity": (
        "At spread 1 every device is equally fast and only the channel matters; as the spread "
        "grows random suffers most, while jbba and crunch+equal put the deep blocks on the fast "
        "devices and get slightly faster."),
    "e-solve-time": (
        "crunch solves in well under a millisecond and jbba-exact in milliseconds up to K = 800; "
        "jbba's dual ascent and the MILP take about 0.1 s per round. Solve times are wall-clock "
        "times on a shared 2-core machine, so they are noisy."),
    "f-jbba-convergence": (
        "The ascent improves its first primal point by 2.2% within 30 iterations, ending within "
        "4e-6 of the jbba-exact optimum, while the best dual bound climbs and the duality gap "
        "closes from 4.3% to 5e-4 in 200 iterations."),
    "g-depth-profile": (
        "Both costs grow linearly with depth: the latency by 1.8x and the peak memory by 2.1x "
        "from block 1 to block 12. That growth is what makes block placement matter."),
    "h-gantt": (
        "Compute takes most of each round; an upload (the same 24,576 LoRA values for every "
        "block) is long only on a device whose channel is poor at that moment, and the last "
        "arrival ends the round. The chosen devices change from round to round as the traces "
        "move."),
    "i-trace-cdf": (
        "The realised latency lies to the right of the planned one: the 3G throughput changes "
        "within a round, and a plan made on the round-start throughput is optimistic by about "
        "10% at the median."),
    "j-reduction": (
        "Planned, jbba beats every baseline (16% over greedy, 31% over depth-unaware, 71% over "
        "random); realised, it loses about 7% to greedy and crunch+equal, whose looser plans "
        "are more robust to the trace moving during the round. jbba-exact matches jbba."),
    "schemes": (
        "dlora moves every activation over the link and takes about 100x deft's round time and "
        "energy; fl-lora trains the whole model on every device and sends 30x the bits; offload "
        "keeps nothing on the devices but sends all token ids, losing to deft in time on the "
        "default population."),
    "dlora-kr": (
        "Kill-and-Revive saves 40% of DLoRA's device computation and 27% of its communication on "
        "measured scores (48% and 42% on synthetic ones), well short of the DLoRA paper's 82% "
        "and 87.5%; against local "
        "fl-lora training DLoRA computes almost nothing on the device but sends 70x the bits."),
    "k-desim-baselines": (
        "With the same data a round (96 samples), DEFT (jbba, 1.9 s) is 5x faster than one "
        "device training every block on the pooled mini-batches (9.7 s) and 2.6x faster than "
        "offloading to a server 10x a cpu-reference core; single-device on its own data is "
        "fastest (0.9 s) but trains on 8 samples, one device's, a round."),
    "l-regime-map": (
        "DEFT wins (hatched) for LoRA unless the server is about 25x faster than a device, and "
        "for full fine-tuning only against a slow server with 20 MHz or more; with scarce "
        "memory DEFT cannot place its blocks at all, because its deepest block needs the same "
        "memory as one device training everything. The numbers are in Findings."),
}


def figure_gallery() -> str:
    """One entry per registered figure: its PNG (or "not drawn yet"), caption and commands."""
    figures = public("FIGURES", "desim.experiments.paper_figures.base")
    out = []
    for name, entry in figures.items():
        sweeps = entry.obj.sweeps
        caption = getattr(entry.obj, "caption", "")
        specs = ", ".join(f"`experiments/{s}.toml`" for s in sweeps) or "none (shipped data only)"
        out += [f"### `{name}`", "", f"{entry.description[0].upper()}{entry.description[1:]}.", ""]
        if (GALLERY / f"{name}.png").is_file():
            out += [f"![{name}: {cell(entry.description)}](gallery/{name}.png)", ""]
        else:
            out += [f"*Not drawn yet: no `docs/gallery/{name}.png` is committed (the commands "
                    "below draw it).*", ""]
        if caption:
            out += [f"**Caption.** {caption}", ""]
        if name in GALLERY_NOTES:
            out += [f"**What it shows.** {GALLERY_NOTES[name]}", ""]
        out += [f"- sweep specs: {specs}",
                f"- output: `figures/{name}.png`, `.pdf`, `.csv` and `.caption.txt`"]
        out += ["", "```bash"]
        if sweeps:
            out += ["desim figures --all --workers 2   # once: every missing sweep, every figure"]
            out += [f"desim figures {name}   # redraws it from the stored results"]
        else:
            out += [f"desim figures {name}   # reads shipped data only"]
        out += ["```", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# results

COLUMNS: dict[str, dict[str, str]] = {
    "rounds": {
        "round": "Round index, from 0.",
        "start_s": "Simulated time the round starts.",
        "end_s": "Simulated time the round ends (last gradient in, plus aggregation).",
        "latency_s": "Realised round latency `end_s − start_s`.",
        "planned_latency_s": "The engine's evaluation of the chosen allocation under the "
                             "round-start snapshot (the same terms for every allocator).",
        "allocator_estimate_s": "What the allocator itself claimed (NaN when it claims nothing).",
        "active_devices": "Devices given work this round.",
        "available_devices": "Devices available at the round start.",
        "bottleneck_device": "The device whose task finished last.",
        "bottleneck_block": "The block that device trained.",
        "min_memory_headroom_bytes": "Least `M_k − m_n` over the round's tasks.",
        "status": "`ok`, or `skipped` (infeasible round under `run.on_infeasible = \"skip\"`).",
        "reason": "Why a round was skipped (empty otherwise).",
        "dropouts": "Tasks lost during the round (faults, timeouts, deadline).",
        "reassigned_blocks": "Blocks given to another device after a loss.",
        "energy_j": "Device energy of the round, summed over its devices.",
        "upload_bits": "Bits uploaded in the round.",
        "download_bits": "Bits downloaded in the round.",
        "samples": "Training samples processed in the round.",
        "tokens": "Tokens processed in the round.",
        "flops": "Counted training FLOPs of the round.",
        "peak_device_memory_bytes": "Largest device memory use of the round.",
        "tokens_per_s_per_w": "Tokens ÷ energy.",
        "mfu": "FLOPs ÷ (round latency × summed peak of the round's devices).",
        "granularity": "Σ compute time ÷ Σ communication time, `G = T_comp/T_comm`.",
    },
    "device_rounds": {
        "round": "Round index.",
        "device": "Device name.",
        "block": "Block the task trained (1 is next to the output).",
        "task": "The round's task the row belongs to, numbered in dispatch order: the rows of a "
                "set of blocks trained in one pass share it, and a device given lost blocks "
                "later in the round runs another task.",
        "bandwidth_hz": "Uplink bandwidth share `B_k`.",
        "compute_start_s": "Start of the computation.",
        "compute_end_s": "End of the computation.",
        "upload_start_s": "Start of the upload.",
        "upload_end_s": "End of the upload.",
        "upload_bits": "Bits uploaded (`D_n`).",
        "mean_rate_bps": "Mean uplink rate over the upload.",
        "planned_compute_s": "Snapshot estimate of the computation time.",
        "planned_upload_s": "Snapshot estimate of the upload time.",
        "memory_bytes": "Peak memory of the task (`m_n`).",
        "memory_budget_bytes": "The device's budget `M_k`.",
        "outcome": "`done`, or the kind of loss (as `fault_events.kind`).",
        "download_start_s": "Start of the download (schemes with a downlink).",
        "download_end_s": "End of the download.",
        "download_bits": "Bits downloaded.",
        "compute_busy_s": "Seconds spent computing.",
        "upload_busy_s": "Seconds spent uploading.",
        "download_busy_s": "Seconds spent downloading.",
        "flops": "Counted training FLOPs of the task.",
        "samples": "Training samples processed.",
        "tokens": "Tokens processed.",
        "compute_energy_j": "`compute_w × compute_busy_s`.",
        "upload_energy_j": "`transmit_w × upload_busy_s`.",
        "download_energy_j": "`receive_w × download_busy_s`.",
        "idle_energy_j": "`idle_w ×` the rest of the round.",
        "energy_j": "Sum of the four energies.",
        "tokens_per_s_per_w": "Tokens ÷ energy.",
        "mfu": "FLOPs ÷ (compute time × the device's peak).",
        "granularity": "Compute seconds ÷ (upload plus download seconds).",
    },
    "fault_events": {
        "round": "Round of the loss.",
        "device": "Device that lost its work.",
        "block": "Block it was training.",
        "kind": "What happened: `offline` (the availability timeline dropped to 0), `outage` "
                "(scripted), `dropout` (injected), `upload-timeout` or `deadline`.",
        "time_s": "When the work was lost.",
        "task_start_s": "When the lost task started.",
        "lost_s": "Work time lost, `time_s − task_start_s`.",
    },
    "timing": {
        "round": "Round index.",
        "solve_wall_s": "The allocator's solve time (the only wall-clock column).",
    },
    "bandwidth_steps": {
        "round": "Round index (a run with `server.uplink = \"reclaim\"` only; see "
                 "[Work-conserving uplink](uplink.md)).",
        "device": "Device name.",
        "time_s": "When the device's uplink bandwidth changed (an upload starting or ending, "
                  "a participant lost).",
        "bandwidth_hz": "Its bandwidth from then until its next row of the round (0: it "
                        "stopped uploading).",
    },
}
#: tables only some runs write, and the overrides of a run that writes them
OPTIONAL_TABLES = {"bandwidth_steps": ["run.rounds=2", 'server.uplink="reclaim"']}
RUN_JSON: dict[str, str] = {
    "schema_version": "Version of the results schema.",
    "scenario": "The resolved scenario (every default filled in, paths absolute).",
    "seed": "The run seed.",
    "versions": "Versions of desim and its main dependencies.",
    "scheme": "The scheme that ran (`deft`, `fl-lora`, `dlora`, `offload`).",
    "csi": "What the planner knew of the channel (`allocator.csi`): `mode` (`snapshot`, "
           "`large-scale`, `ergodic`, `predicted`, `oracle`) and its `window_s`.",
    "uplink": "How the uplink band is shared: `mode` (`fixed` or `reclaim`) and, for "
              "`reclaim`, its re-split rule `reclaim` (`proportional` or `minmax`).",
    "cost_model": "Which cost model priced each hardware class (e.g. "
                  "`profiled:cpu-reference`, `analytic`).",
    "flops_source": "Per hardware class: counted FLOPs from the profile, or the analytic count.",
    "host": "The host that ran the simulation: CPU model name, CPU family and model numbers, "
            "logical cores and the installed torch version (empty without torch).",
    "pricing": "Per hardware class, what priced it: `source`, the profile reference and the "
               "`files` with the workload's rows, where and when they were `measured` (CPU, "
               "cores, threads, torch, first and last date), the `speed` applied, a calibrated "
               "class file's `calibration` (its speed, interval, host and points), a roofline "
               "`transfer`, and `host_match`: whether this host matches the measuring one, "
               "field by field (`null` for a borrowed or GPU class). See "
               "[Runs say what priced them](calibration.md#runs-say-what-priced-them).",
    "allocator_diagnostics": "What the allocator reports per round (e.g. JBBA's iteration "
                             "trace, CRUNCH's fallback); present when it reports anything.",
    "scheme_diagnostics": "What an `fl-lora` or `dlora` round planned, per round (e.g. the "
                          "clients and their `fedavg_weights`, DLoRA's active modules).",
}
DTYPES = {"int64": "integer", "float64": "number", "object": "text", "str": "text",
          "string": "text", "bool": "boolean"}


def sample_run(overrides: list[str]) -> Any:
    """A short run of the built-in scenario (the tables' columns come from it)."""
    load_scenario = public("load_scenario", "desim.io.scenario")
    build_simulation = public("build_simulation", "desim.engine.assembly", "desim.engine.simulation")
    return build_simulation(load_scenario(None, overrides)).run()


def result_columns() -> str:
    """One table per result file, columns in file order."""
    result = sample_run(["run.rounds=3", "faults.dropout_rate=0.5", "run.seed=1"])
    tables = result.tables()
    for name, overrides in OPTIONAL_TABLES.items():
        tables[name] = sample_run(overrides).tables()[name]
    missing = set(COLUMNS) ^ set(tables)
    if missing:
        raise RuntimeError(f"docs/gen_pages.py: result tables changed: {sorted(missing)}")
    out = []
    for name, frame in tables.items():
        doc = COLUMNS[name]
        undocumented = [c for c in frame.columns if c not in doc]
        stale = [c for c in doc if c not in frame.columns]
        if undocumented or stale:
            raise RuntimeError(f"docs/gen_pages.py: table {name}: describe {undocumented}, "
                               f"remove {stale}")
        rows = [[f"`{c}`", DTYPES.get(str(frame[c].dtype), str(frame[c].dtype)), unit_of(c),
                 doc[c]] for c in frame.columns]
        out += [f"### `{name}`", "", table(["column", "type", "unit", "meaning"], rows), ""]
    return "\n".join(out)


def run_json() -> str:
    """The keys of ``run.json`` (a JBBA run, so the diagnostics key is present)."""
    result = sample_run(["run.rounds=2", 'allocator.name="jbba"'])
    keys = list(result.metadata)
    undocumented = [k for k in keys if k not in RUN_JSON]
    if undocumented:
        raise RuntimeError(f"docs/gen_pages.py: describe run.json keys {undocumented}")
    rows = [[f"`{k}`", RUN_JSON[k]] for k in keys]
    rows += [[f"`{k}`", v + " (only some runs)"] for k, v in RUN_JSON.items() if k not in keys]
    return table(["key", "meaning"], rows)


# ---------------------------------------------------------------------------------------------
# calibration


def profile_columns() -> str:
    """The profile CSV format from ``desim.io.calibration.PROFILE_COLUMNS``."""
    columns = public("PROFILE_COLUMNS", "desim.io.calibration")
    rows = [[f"`{c}`", kind, unit_of(c), meaning] for c, (kind, meaning) in columns.items()]
    return table(["column", "type", "unit", "meaning"], rows)


def scientific(value: float) -> str:
    """``1.80×10¹¹``: three significant digits and a superscript exponent."""
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}×10" + str(int(exponent)).translate(str.maketrans("-0123456789",
                                                                          "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))


def profile_sheet(path: Path) -> str:
    """The facts of one shipped profile, read from its rows."""
    t = pd.read_csv(path)
    points = sorted(set(zip(t.batch_size, t.seq_len, strict=True)))
    grid = ", ".join(f"{b}×{s}" for b, s in points)
    want = (4, 128) if (4, 128) in points else max(points, key=lambda p: (p[0] * p[1], p[0]))
    at = t[(t.batch_size == want[0]) & (t.seq_len == want[1])].sort_values("block")
    first, last = at.iloc[0], at.iloc[-1]
    one = lambda col: ", ".join(str(v) for v in sorted(t[col].astype(str).unique()))  # noqa: E731
    spread = (t.compute_spread_s / t.compute_s).median()
    rank = one("lora_rank")
    target = one("target_len")
    rows = [
        ["hardware class", f"`{one('hardware')}`: {one('device_name')}, {one('cores')} logical "
         f"cores, {one('threads')} torch thread(s), clock `{one('clock')}`"],
        ["software", f"torch {one('torch_version')}, transformers {one('transformers_version')}, "
         f"peft {one('peft_version')}"],
        ["model, method", f"`{one('model')}`, `{one('method')}`"
         + (f" (LoRA rank {rank})" if rank != "0" else "")
         + (f", target length {target}" if target != "0" else "")],
        ["blocks", f"{one('num_blocks')} (one layer each)"],
        ["grid `b×s`", grid],
        ["rows, repeats", f"{len(t)}, {one('repeats')}"],
        ["median spread / median time", f"{spread:.1%}"],
        ["memory method", f"`{one('memory_method')}`"],
        [f"at {want[0]}×{want[1]}, block 1 → {int(last.block)}",
         f"`compute_s` {first.compute_s:.2f} → {last.compute_s:.2f} s; peak memory "
         f"{first.peak_memory_bytes / 1e6:,.0f} → {last.peak_memory_bytes / 1e6:,.0f} MB; "
         f"saved for backward at block {int(last.block)}: {last.saved_bytes / 1e6:.3g} MB; "
         f"counted FLOPs at block {int(last.block)}: {scientific(last.flops)}"],
        ["upload per block", f"{int(last.trainable_params):,} values"
         + ("" if t.trainable_params.nunique() == 1 else " at the deepest block")],
    ]
    return table(["", path.name], rows)


def calibration() -> None:
    """The profile format and a data sheet for every shipped profile."""
    fill("calibration.md", "profile-columns", profile_columns())
    shipped = sorted(Path(p) for p in public("shipped_profiles", "desim.io.shipped")())
    page = (DOCS / "calibration.md").read_text()
    for path in shipped:
        fill("calibration.md", f"profile-sheet:{path.name}", profile_sheet(path))
    documented = {line.split("profile-sheet:")[1].split(" ")[0]
                  for line in page.splitlines() if "<!-- gen:profile-sheet:" in line}
    stale = documented - {p.name for p in shipped}
    if stale:
        raise RuntimeError(f"docs/calibration.md: sheets for profiles not shipped: {stale}")


# ---------------------------------------------------------------------------------------------
# command line


def commands(group: Any, path: list[str]) -> Iterator[list[str]]:
    """Every command path of the typer app, groups first."""
    yield path
    for name, sub in sorted(getattr(group, "commands", {}).items()):
        yield from commands(sub, [*path, name])


def cli_reference() -> str:
    """The ``--help`` text of every command, as the terminal shows it (100 columns)."""
    import typer.main
    from typer.testing import CliRunner

    app = public("app", "desim.cli.main")
    root = typer.main.get_command(app)
    runner = CliRunner()
    env = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    out = []
    for path in commands(root, []):
        res = runner.invoke(app, [*path, "--help"], prog_name="desim", env=env)
        if res.exit_code != 0:
            raise RuntimeError(f"desim {' '.join(path)} --help failed: {res.output}")
        text = "\n".join(line.rstrip() for line in res.output.strip("\n").splitlines())
        title = " ".join(["desim", *path])
        out += [f"### `{title}`", "", "```text", text.strip("\n"), "```", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# API reference

def api_reference() -> str:
    """The mkdocstrings entries of ``desim.__all__``, each at the module that defines it."""
    import desim

    paths = [f"{desim.EXPORTS[n]}.{n}" for n in desim.__all__ if n != "__version__"]
    paths.append("desim.errors")
    for p in paths:  # fail here, with the name, rather than deep inside mkdocstrings
        module, _, attr = p.rpartition(".")
        try:
            importlib.import_module(p)
        except ImportError:
            if not hasattr(importlib.import_module(module), attr):
                raise RuntimeError(f"docs/gen_pages.py: {p} does not exist") from None
    return "\n".join(f"::: {p}\n" for p in paths)


# ---------------------------------------------------------------------------------------------

GENERATORS: tuple[tuple[str, str, Callable[[], str]], ...] = (
    ("scenarios.md", "scenario-keys", scenario_keys),
    ("allocators.md", "allocators", allocators),
    ("sweeps.md", "figure-gallery", figure_gallery),
    ("results.md", "result-columns", result_columns),
    ("results.md", "run-json", run_json),
    ("cli.md", "cli-reference", cli_reference),
    ("api.md", "api-reference", api_reference),
)

for page, marker, build in GENERATORS:
    fill(page, marker, build())
calibration()

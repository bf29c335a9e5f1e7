"""Checking and resolving the ``[channel]`` and ``[compute]`` sections against their registries.

Both sections name a registered ``kind`` (:data:`desim.world.channel_kinds.CHANNEL_KINDS`,
:data:`desim.world.compute_kinds.COMPUTE_KINDS`); every other key is one of that kind's
parameters, validated by the kind's own model. A key of another kind of the same section (a
scenario sets ``path`` for ``trace`` and a run switches ``kind`` to ``rayleigh``) must still have
a valid value, and is then ignored with one warning naming it; a key no kind knows is an error
listing the kind's parameters.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError, create_model

from desim.errors import DesimError, ScenarioError, UnknownNameError
from desim.registry import Entry, Registry, format_errors, validate_section
from desim.scenario.model import Scenario
from desim.world.channel_kinds import CHANNEL_KINDS
from desim.world.compute_kinds import COMPUTE_KINDS


def section_params(
    registry: Registry[Any], section: str, kind: str, params: Mapping[str, Any]
) -> BaseModel:
    """The validated parameters of ``kind``; keys of other kinds are dropped without a word.

    Builders use it after :func:`check_kinds` has warned about those keys where the scenario
    was loaded.

    Raises:
        UnknownNameError: for an unknown kind, listing the known ones.
        ScenarioError: ``<section>.<key>: <why>`` for each bad parameter.
    """
    return validate_section(registry, kind, params, section, quiet=True)


def check_section(
    registry: Registry[Any], section: str, kind: str, params: Mapping[str, Any], source: str,
    expected: Collection[str] = (),
) -> None:
    """Check one section: a registered kind, its own parameters, and the other kinds' keys.

    Args:
        registry: the section's kinds.
        section: ``channel`` or ``compute``, for messages.
        kind: the kind the section names.
        params: every other key of the section.
        source: where the scenario came from (a file path, a sweep run).
        expected: kinds a sweep varies over (their keys are ignored without a warning).

    Raises:
        ScenarioError: ``<source>: <section>.kind: unknown ...`` listing the known kinds, or
            ``<source>: <section>.<key>: <why>`` for a bad value of any key.
    """
    try:
        own = set(registry[kind].params.model_fields)
        _check_foreign_values(registry, section, {k: v for k, v in params.items() if k not in own})
        validate_section(registry, kind, params, section, expected=expected)
    except UnknownNameError as exc:
        raise ScenarioError(f"{source}: {section}.kind: {exc}") from None
    except DesimError as exc:
        raise ScenarioError(f"{source}: {exc}") from None


def check_kinds(scenario: Scenario, source: str,
                expected: Mapping[str, Collection[str]] | None = None) -> None:
    """Check a scenario's ``[channel]`` and ``[compute]`` sections (see :func:`check_section`).

    ``expected``: per section, the kinds a sweep varies over.
    """
    channel, compute, named = scenario.channel, scenario.compute, expected or {}
    check_section(CHANNEL_KINDS, "channel", channel.kind, channel.params, source,
                  named.get("channel", ()))
    check_section(COMPUTE_KINDS, "compute", compute.kind, compute.params, source,
                  named.get("compute", ()))


def _check_foreign_values(
    registry: Registry[Any], section: str, params: Mapping[str, Any]
) -> None:
    """Refuse a key of another kind whose value that kind would refuse (its type and bounds).

    Switching the kind must not make a typo such as ``shadowing = 1`` pass silently; a key no
    kind knows is left for the kind's own model to name.
    """
    probs = []
    for key, value in params.items():
        owner = next((e for e in registry.values() if key in e.params.model_fields), None)
        if owner is None:
            continue
        field = owner.params.model_fields[key]
        # the key's own type and bounds, without the owner's checks of the whole section
        definition: Any = (field.annotation, field)
        probe = create_model(
            f"{owner.params.__name__}_{key}", __config__=owner.params.model_config,
            **{key: definition},
        )
        try:
            probe(**{key: value})
        except ValidationError as exc:
            probs.append(format_errors(exc, Entry(owner.name, None, "", probe), section))
    if probs:
        raise ScenarioError("; ".join(probs))

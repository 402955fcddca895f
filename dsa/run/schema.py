"""How a run setting is declared, once: a spec field whose metadata (:func:`setting`) holds its flag's help,
kind, choices, section and roles, and the :class:`Spec` base that turns such records to and from JSON and
the command line's values. What is derived from the fields: the flags (:func:`dsa.cli.flags.add_spec_flags`),
the groups below, the resume identity and the level database's key. The settings themselves are
:mod:`dsa.run.settings`. Imports nothing heavy."""
from __future__ import annotations

from dataclasses import fields

# Each run setting is declared once, as a spec field whose ``metadata`` (:func:`setting`) holds all the rest:
# its flag's help, how the command line reads it (``kind``, :data:`dsa.cli.flags.KINDS`: a type that checks the
# range as it parses), its choices, the section of the command line it belongs to, and its roles. The flags
# (:func:`dsa.cli.flags.add_spec_flags`), the specs built from them (:meth:`Spec.from_flags`), the groups below
# and the level database's key are generated from these fields. A field without help has no flag.
# Roles: RUNTIME: where or how fast a run computes, not what it computes (left out of the resume identity);
# CARRIED: a setting that a run folder passes on to ``dsa prune/eval --allocation RUN`` unless given
# there (so that the run's formula gives the run's allocation); LEVELS: what a SparseGPT level database's
# content depends on besides the pruner (its key, :func:`dsa.run.llm.level_key`); TOY: a setting the synthetic
# task reads too (every other model, data and pruning setting is refused with --task synthetic); RECORD: a
# value a record sets, which no flag gives (the model's name in records).
RUNTIME = {"runtime": True}
CARRIED = {"carried": True}
LEVELS = {"levels": True}
TOY = {"toy": True}
RECORD = {"record": True}  # set from a record, never by a flag
# the command line's sections: every command with a model; its calibration sample; the pruner; the search's fitness
SECTIONS = ("data", "calibration", "pruning", "fitness")


def setting(help: str | None, *roles: dict, kind: str = "text", choices: tuple | None = None,
            section: str = "data", flag: str | None = None, flag_default=None, metavar: str | None = None,
            many: str | None = None) -> dict:
    """A spec field's metadata: its flag's ``help`` (``{default}`` is filled in), ``kind`` (how the command line
    reads it), ``choices``, ``section`` (:data:`SECTIONS`), the flag's name where it differs from the field's
    (``flag``), the flag's default where it differs from the field's (``flag_default``: what a new run gets,
    where the field's default is what an older record without it meant), ``metavar``, ``many`` (the kind of
    its comma-separated form in a multi-task search), and its ``roles``."""
    meta = {k: v for k, v in dict(help=help, kind=kind, choices=choices, section=section, flag=flag,
                                   flag_default=flag_default, metavar=metavar, many=many).items() if v is not None}
    for role in roles:
        meta.update(role)
    return meta


def flag_name(f) -> str:
    """The CLI argument name (argparse ``dest``) of a spec field."""
    return f.metadata.get("flag", f.name)


def nested(f) -> type | None:
    """The spec a field holds (a field annotated with a :class:`Spec` subclass's name), else None."""
    return Spec.registry.get(f.type) if isinstance(f.type, str) else None


def flag_values(cls: type, values: dict) -> dict:
    """Field name → value of ``cls``'s plain fields whose flag is among ``values`` (the command line's values by
    flag name, argparse's ``dest``), an off-switch such as ``--no-cache`` inverted back; nested specs left out."""
    out = {}
    for f in fields(cls):
        if "help" in f.metadata and (name := flag_name(f)) in values:
            out[f.name] = not values[name] if f.metadata.get("kind") == "off-switch" else values[name]
    return out


def flat_fields(spec: type) -> list:
    """The plain fields of ``spec``, nested specs' fields in their place."""
    out = []
    for f in fields(spec):
        sub = nested(f)
        out += flat_fields(sub) if sub is not None else [f]
    return out


# a field's annotation → the JSON values it takes (what from_dict may be handed by a damaged config.json)
FIELD_TYPES = {"str": (str,), "str | None": (str, type(None)), "int": (int,), "int | None": (int, type(None)),
               "float": (int, float)}


class Spec:
    """Shared conversions: to and from plain JSON data and from the command line's values (nested specs
    included), and the type check of what came from JSON. Every subclass is registered by name, so that a
    field annotated with a spec's name is that spec, nested (:func:`nested`)."""

    registry: dict[str, type] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Spec.registry[cls.__name__] = cls

    def type_problems(self) -> list[str]:
        """A message per field whose value is not of the field's type (nested specs included)."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            kinds = FIELD_TYPES.get(f.type)
            if kinds is None:  # a nested spec
                out += value.type_problems() if isinstance(value, Spec) else [f"{f.name} must be an object"]
            elif isinstance(value, bool) or not isinstance(value, kinds):
                out.append(f"{f.name} must be of type {f.type}, got {value!r:.40}")
        return out

    def to_dict(self) -> dict:
        """The record of these settings (what run folders and comparisons store), nested specs by theirs."""
        return {f.name: value.to_dict() if isinstance(value := getattr(self, f.name), Spec) else value
                for f in fields(self)}

    @classmethod
    def from_flags(cls, values: dict, **given):
        """These settings from the command line's values by flag name (argparse's ``dest``; a nested spec from the
        same values), a setting whose flag is absent at its default; ``given``: fields set by the caller."""
        subs = {f.name: sub.from_flags(values) for f in fields(cls)
                if f.name not in given and (sub := nested(f)) is not None}
        return cls(**{**flag_values(cls, values), **subs, **given})

    @classmethod
    def from_dict(cls, data: dict):
        kwargs = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                sub = nested(f)
                kwargs[f.name] = sub.from_dict(value) if sub is not None and isinstance(value, dict) else value
        return cls(**kwargs)


def leaves(spec) -> list[tuple[str, object, dict]]:
    """(field name, recorded value, metadata) of every plain field that ``spec``'s record holds, nested specs
    flattened in order."""
    out, record = [], spec.to_dict()
    for f in fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, Spec):
            out += leaves(value)
        elif f.name in record:
            out.append((f.name, record[f.name], dict(f.metadata)))
    return out


def carried_settings(root: type) -> dict[str, tuple[str, str]]:
    """CLI argument name → (nested spec's field in ``root``, its field) of the CARRIED settings (what a run
    folder passes on)."""
    return {flag_name(f): (group.name, f.name) for group in fields(root) if (cls := nested(group)) is not None
            for f in fields(cls) if f.metadata.get("carried")}


def model_settings(root: type) -> tuple[str, ...]:
    """CLI argument names of every model, data, pruning and fitness setting of ``root`` that the synthetic task
    has no use for (it has no model, data, pruner or validation windows): all but the TOY ones."""
    return tuple(flag_name(f) for f in flat_fields(root) if not f.metadata.get("toy") and not f.metadata.get("record"))

"""The parts of the docs that come from the code, so they cannot drift from it.

A docs page asks for one with a marker line, e.g. `<!-- generated: config-campaign -->`; the
MkDocs hook (`tools/mkdocs_hooks.py`) replaces it at build time. `python tools/docs_gen.py NAME`
prints one, and `python tools/docs_gen.py --check` lists the model fields without a description.

| marker | what |
|---|---|
| `stage-diagram` | the pipeline's stages with the tables they read and write (`pipeline.diagram`) |
| `config-campaign`, `config-environment` | every key of the campaign / environment YAML: type, default, description |
| `screening-tags` | the screening tags and whether each makes a fan ineligible |
| `tables` | the Delta tables of the catalog: one row per, partitioning, merge keys, constraints |
"""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Callable

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)

# When each screening tag is given (the rule book's own words); the "makes ineligible" column
# comes from the code (`screening.rules.DISQUALIFYING`), and a test keeps both lists equal.
TAG_RULES = {
    "INVALID_PHONE": "a phone was given but libphonenumber finds no valid number (default region: the fan's "
    "`country`, else the campaign's `home_country`; a number typed with an international dialling prefix is "
    "first tried as international)",
    "UNCONFIRMED_PHONE": "a valid phone whose `phone_confirmed` is not true",
    "INTL_PHONE": "a valid phone outside `options.sms_countries` and the home country",
    "INVALID_EMAIL": "not `local@domain.tld` after trimming and lower-casing",
    "BLOCKED_EMAIL": "the canonical email equals the canonical form of a blocked address",
    "BLOCKED_DOMAIN": "the domain or a parent domain is blocked, or disposable (`disposable-email-domains`)",
    "ALLOWLISTED": "an allow-list glob matched: it lifts both blocks",
    "SHARED_IDENTIFIER": "an identifier held by more than `screening.max_shared` accounts (default 50)",
    "DUPLICATE_ACCOUNT": "another account of the identity cluster stays",
    "FRAUD_RING": "the identity cluster has more than `screening.ring_size` accounts (default 6)",
    "VELOCITY": "it lies in a window of `screening.velocity.window_minutes` (10) with more than "
    "`screening.velocity.max_registrations` (5) registrations from its IP or device",
    "SCALPER_SIGNALS": "`resale_listings_24m >= screening.scalper.min_resale_listings` (10) or `chargebacks_24m >= "
    "screening.scalper.min_chargebacks` (2), and no event attended",
    "STEALTH_RING": "a fresh account in a weak-link cluster of more than `screening.ring_size` accounts (6) of which "
    "at least `screening.weak_links.ring_share` (80 %) attended no event and at least "
    "`screening.weak_links.resale_share` (50 %) list tickets for resale; fresh accounts are weakly linked when they "
    "share at least two weak signals (IP /24 or /48, non-provider email domain, phone block of 100, postal code, "
    "email pattern) whose evidence reaches `screening.weak_links.min_weight` bits (see Weak links below)",
    "REVIEW": "weakly linked, but not a STEALTH_RING (a cluster of at most `screening.ring_size` accounts, or one "
    "that attends events or does not resell): listed in the report for an operator",
}


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(names) + (" \\| null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[0])} → {_type_name(args[1])}" if args else "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation)).replace("datetime", "date-time")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "see below"
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            return ", ".join(f"`{v.model_dump(mode='json')}`" for v in value)
        return f"`{value}`" if value not in ([], {}) else "empty"
    if field.default is PydanticUndefined:
        return "**required**"
    if field.default is None:
        return "unset"
    value = field.default
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


def _nested(annotation) -> type[BaseModel] | None:
    """The model a field holds (directly, in a list, a map or an optional), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested(arg)
        if found is not None:
            return found
    return None


def _walk(model: type[BaseModel], prefix: str, seen: set) -> typing.Iterator[tuple[str, FieldInfo, type]]:
    for name, field in model.model_fields.items():
        origin = typing.get_origin(field.annotation)
        key = f"{prefix}{name}"
        yield key, field, model
        inner = _nested(field.annotation)
        if inner is not None and inner not in seen:
            if origin in (list, tuple):
                key += "[]"
            elif origin is dict:
                key += ".<key>"
            yield from _walk(inner, key + ".", seen | {inner})


def undocumented_fields(*models: type[BaseModel]) -> list[str]:
    """`Model.field` for every field (nested too) without a description."""
    return sorted({f"{owner.__name__}.{key.rsplit('.', 1)[-1]}"
                   for model in models for key, field, owner in _walk(model, "", set())
                   if not (field.description or "").strip()})  # fmt: skip


def config_table(model: type[BaseModel]) -> str:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, field, _ in _walk(model, "", set()):
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {description} |")
    return "\n".join(rows)


def config_campaign() -> str:
    from campaign_pipeline.config import Campaign

    return config_table(Campaign)


def config_environment() -> str:
    from campaign_pipeline.config import Environment

    return config_table(Environment)


def stage_diagram() -> str:
    from campaign_pipeline.pipeline import diagram

    return diagram()


def screening_tags() -> str:
    from campaign_pipeline.screening.rules import DISQUALIFYING, TAG_ORDER

    rows = ["| tag | when | makes ineligible |", "|---|---|---|"]
    for tag in TAG_ORDER:
        ineligible = "no"
        if tag in DISQUALIFYING:
            ineligible = "yes, unless `options.allow_intl_phones`" if tag == "INTL_PHONE" else "yes"
        rows.append(f"| `{tag}` | {TAG_RULES[tag]} | {ineligible} |")
    return "\n".join(rows)


def tables() -> str:
    from campaign_pipeline.catalog import CATALOG

    rows = ["| table | one row per | partitioned by | merge keys | CHECK constraints |", "|---|---|---|---|---|"]
    for name, t in CATALOG.items():
        checks = "; ".join(f"`{n}`" for n, _ in t.checks) or ""
        keys = ", ".join(t.merge_keys) or "(appended)"
        description = t.description.replace("|", "\\|")
        rows.append(f"| `{name}` | {description} | {', '.join(t.partition_by)} | {keys} | {checks} |")
    return "\n".join(rows)


GENERATORS: dict[str, Callable[[], str]] = {
    "stage-diagram": stage_diagram,
    "config-campaign": config_campaign,
    "config-environment": config_environment,
    "screening-tags": screening_tags,
    "tables": tables,
}


def expand(markdown: str) -> str:
    """`markdown` with every marker replaced by what it names; an unknown marker is an error."""

    def one(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise KeyError(f"unknown generated section {name!r} (known: {', '.join(GENERATORS)})")
        return GENERATORS[name]()

    return MARKER.sub(one, markdown)


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        from campaign_pipeline.config import Campaign, Environment

        missing = undocumented_fields(Campaign, Environment)
        for m in missing:
            print(f"no description: {m} (add Field(description=...) in lib/campaign_pipeline/config.py)")
        return 1 if missing else 0
    for name in argv or list(GENERATORS):
        print(GENERATORS[name]())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

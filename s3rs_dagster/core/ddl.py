"""Target DDL: what to create, add or widen so the files fit, and what must stop the load.

Types are spoken in one vocabulary, Redshift's (`VARCHAR(1020)`, `DECIMAL(12,2)`,
`TIMESTAMPTZ`, `VARBYTE(65535)`, ...); each warehouse backend translates them and reports its
existing columns back in the same vocabulary. The rules: a new column is added; a column whose
type grows is widened (VARCHAR/VARBYTE length, DECIMAL digits, integer and float width); a
column whose source type shrank keeps its wider target type; anything else (a change of kind,
such as INTEGER to VARCHAR) stops the load with the column, both types and the user's choices.
A column that disappeared from the source stays in the target, filled with NULL from then on.
"""

from __future__ import annotations

from dataclasses import dataclass

from s3rs_dagster.adapters.warehouse.types import WarehouseType

_INTEGERS = ("SMALLINT", "INTEGER", "BIGINT")
_FLOATS = ("REAL", "DOUBLE PRECISION")
MAX_DECIMAL_PRECISION = 38


class SchemaChangeError(Exception):
    """A source column changed in a way the target cannot follow automatically."""


@dataclass(frozen=True)
class AddColumn:
    column: str
    type: WarehouseType


@dataclass(frozen=True)
class WidenColumn:
    column: str
    old: WarehouseType
    new: WarehouseType


Change = AddColumn | WidenColumn


def plan_changes(
    table: str, existing: dict[str, WarehouseType], wanted: list[tuple[str, WarehouseType]]
) -> list[Change]:
    """The changes that make `existing` hold every `wanted` column; raise on incompatible ones."""
    changes: list[Change] = []
    for column, new in wanted:
        old = existing.get(column)
        if old is None:
            changes.append(AddColumn(column, new))
            continue
        merged = wider(old, new)
        if merged is None:
            raise SchemaChangeError(
                f"column {column!r} of {table}: the target has {old}, the source now maps to "
                f"{new}, and s3rs does not convert one kind of type into another. Choose: cast "
                "the column in the source back to a compatible type; or rename or drop the "
                "target column (ALTER TABLE) and run again, which adds it with the new type and "
                "fills it from the next files (refresh the table to backfill it)"
            )
        if merged != old:
            changes.append(WidenColumn(column, old, merged))
    return changes


def wider(old: WarehouseType, new: WarehouseType) -> WarehouseType | None:
    """The type that holds every value of both, or None when there is no such type here."""
    if old == new:
        return old
    if old.name == new.name and old.name in ("VARCHAR", "VARBYTE"):
        if old.size is None or new.size is None:
            return WarehouseType(old.name)
        return WarehouseType(old.name, max(old.size, new.size))
    if old.name in _INTEGERS and new.name in _INTEGERS:
        return max(old, new, key=lambda kind: _INTEGERS.index(kind.name))
    if old.name in _FLOATS and new.name in _FLOATS:
        return max(old, new, key=lambda kind: _FLOATS.index(kind.name))
    if old.name == "DECIMAL" and new.name == "DECIMAL":
        return _wider_decimal(old, new)
    if old.name == "DECIMAL" and new.name in _INTEGERS:
        return _wider_decimal(old, _integer_as_decimal(new))
    if old.name in _INTEGERS and new.name == "DECIMAL":
        return _wider_decimal(_integer_as_decimal(old), new)
    return None


def _integer_as_decimal(kind: WarehouseType) -> WarehouseType:
    digits = {"SMALLINT": 5, "INTEGER": 10, "BIGINT": 19}[kind.name]
    return WarehouseType("DECIMAL", digits, 0)


def _wider_decimal(old: WarehouseType, new: WarehouseType) -> WarehouseType | None:
    old_scale, new_scale = old.scale or 0, new.scale or 0
    integer_digits = max((old.size or 18) - old_scale, (new.size or 18) - new_scale)
    scale = max(old_scale, new_scale)
    if integer_digits + scale > MAX_DECIMAL_PRECISION:
        return None
    merged = WarehouseType("DECIMAL", integer_digits + scale, scale)
    return old if merged == old else merged

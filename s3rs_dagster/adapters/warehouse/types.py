"""The shared type vocabulary of the warehouses: Redshift's spelling, parsed."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAMETERS = re.compile(r"^([A-Z ]+?)\s*(?:\((\d+)(?:\s*,\s*(\d+))?\))?$")


@dataclass(frozen=True)
class WarehouseType:
    """A parsed type: `VARCHAR(10)` -> ('VARCHAR', 10, None)."""

    name: str
    size: int | None = None
    scale: int | None = None

    @classmethod
    def parse(cls, text: str) -> WarehouseType:
        match = _PARAMETERS.match(text.strip().upper())
        if match is None:
            raise ValueError(f"not a warehouse type: {text!r}")
        name, size, scale = match.groups()
        return cls(
            " ".join(name.split()),
            int(size) if size else None,
            int(scale) if scale else None,
        )

    def __str__(self) -> str:
        if self.size is None:
            return self.name
        if self.scale is None:
            return f"{self.name}({self.size})"
        return f"{self.name}({self.size},{self.scale})"

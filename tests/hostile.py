"""Values whose own methods raise while the library reads them (for the coercion tests)."""

from __future__ import annotations

import datetime as dt
from typing import Any


class ItemsRaise(dict[str, Any]):
    def items(self) -> Any:
        raise RuntimeError("items")


class IterRaises(list[Any]):
    def __iter__(self) -> Any:
        raise RuntimeError("iter")


class IndexRaises(int):
    def __int__(self) -> int:
        raise RuntimeError("int")

    def __index__(self) -> int:
        raise RuntimeError("index")


class FloatRaises(float):
    def __float__(self) -> float:
        raise RuntimeError("float")


class IsoformatRaises(dt.datetime):
    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        raise RuntimeError("isoformat")


class UnorderableRaises:
    def __lt__(self, other: object) -> bool:
        raise RuntimeError("lt")

    def __repr__(self) -> str:
        return "u"

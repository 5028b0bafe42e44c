"""The one parser for unit lists (``"0-31,550"``, ``"all"``) that every command and API shares.

Pure Python, so commands that only read an atlas (``show``, ``serve``) parse units without importing torch.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Iterable, Sequence

from neuronscope.errors import UnitsError

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def _unit_index(value: Any, units: Any) -> int:
    """One unit index: an int or anything integer that has ``__index__`` (NumPy, torch); never a float or bool."""
    if isinstance(value, bool):
        raise UnitsError(f"bad unit list {units!r}: {value!r} is not a unit index")
    try:
        return operator.index(value)
    except TypeError:
        raise UnitsError(f"bad unit list {units!r}: {value!r} is not an integer unit index") from None


def parse_units(units: str | int | Iterable[int], n_units: int | None = None, *, repeats: bool = False) -> list[int]:
    """Parse a unit list: ``"0-31,550"`` (inclusive ranges, commas) or ``"all"``.

    Args:
        units: the text form, a single index (an int, or a NumPy / torch
            integer scalar), or a sequence of indices. Floats are refused,
            not truncated.
        n_units: the layer's number of units (channels). Needed for ``"all"``;
            when given, every index is checked against it.
        repeats: keep a unit written twice (one unit per image, where two images may share one).

    Returns:
        The indices as plain ints (they go on into JSON and SQLite), in the order written, duplicates
        dropped unless ``repeats``.
    """
    if isinstance(units, bool):
        raise UnitsError(f"bad unit list {units!r}: write indices like '0-31,550' or 'all'")
    if getattr(units, "ndim", None) == 0 or not isinstance(units, (str, Iterable)):
        indices = [_unit_index(units, units)]  # one index: int, np.int64, a 0-d tensor or array; a float is refused
    elif isinstance(units, str):
        text = units.strip()
        if text.lower() == "all":
            if n_units is None:
                raise UnitsError("'all' units needs the layer's size; pass n_units (or list the units, e.g. '0-31')")
            return list(range(n_units))
        if not text:
            raise UnitsError("empty unit list: write indices like '0-31,550' or 'all'")
        indices = []
        for part in text.split(","):
            match = _RANGE.match(part)
            if match is None:
                raise UnitsError(f"bad unit list {units!r}: {part.strip()!r} is not an index or a range like '0-31'")
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) is not None else first
            if last < first:
                raise UnitsError(f"bad unit list {units!r}: range {first}-{last} runs backwards (write {last}-{first})")
            if n_units is not None and last >= n_units:  # before the range is built: "0-5500000000" is 22 GB
                raise UnitsError(f"unit {last} is out of range: the layer has {n_units} units (0-{n_units - 1})")
            indices.extend(range(first, last + 1))
    else:
        indices = [_unit_index(u, units) for u in units]

    if any(u < 0 for u in indices):
        raise UnitsError(f"bad unit list {units!r}: unit indices start at 0")
    if n_units is not None and indices and max(indices) >= n_units:
        raise UnitsError(f"unit {max(indices)} is out of range: the layer has {n_units} units (0-{n_units - 1})")
    return indices if repeats else list(dict.fromkeys(indices))


def parse_unit(unit: str | int, n_units: int | None = None) -> int:
    """Exactly one unit index as a plain int, read as :func:`parse_units` reads it (an int, a NumPy / torch
    integer, ``"473"``); a float, or text naming several units, is an error."""
    units = parse_units(unit, n_units)
    if len(units) != 1:
        raise UnitsError(f"{unit!r} names {len(units)} units where one is wanted: give one unit index")
    return units[0]


def format_units(units: Sequence[int]) -> str:
    """Inverse of :func:`parse_units` for sorted runs: ``[0,1,2,5]`` -> ``"0-2,5"``."""
    parts: list[str] = []
    ordered = sorted(set(units))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)

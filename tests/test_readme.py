"""The README's configuration table matches the settings the server actually reads."""

from __future__ import annotations

import re
from pathlib import Path

from server.config import documented_variables

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]+) \|", README.read_text(), re.M))
    for var, _field, default in documented_variables():
        assert var in rows, f"{var} missing from the README configuration table"
        shown = rows[var].strip().strip("`")
        expected = default
        assert shown == expected, f"{var}: README says {shown!r}, code says {expected!r}"
    assert set(rows) == {v for v, _, _ in documented_variables()}

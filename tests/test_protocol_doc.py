"""Every JSON example in docs/PROTOCOL.md decodes as the type it shows, so the doc cannot
drift from the wire types."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from protocol.commands import Command, Event
from protocol.messages import ClientMessage, ServerMessage
from protocol.model import dec_hook
from server.http import ErrorBody

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"
_BLOCKS = re.findall(r"```json\n(.*?)\n```", DOC.read_text(), re.S)
_CLIENT_TYPES = {"join", "leave", "cmd", "ping"}


def _examples() -> list[str]:
    return [line for block in _BLOCKS for line in block.splitlines() if line.strip().startswith(("{", "["))]


def test_the_doc_has_examples() -> None:
    assert len(_examples()) >= 30


@pytest.mark.parametrize("example", _examples())
def test_example_decodes_as_its_type(example: str) -> None:
    value = json.loads(example)
    items = value if isinstance(value, list) else [value]
    for item in items:
        raw = json.dumps(item).encode()
        if "error" in item and "type" not in item:  # a REST error body
            msgspec.json.decode(raw, type=ErrorBody)
        elif "op" in item and "type" not in item:
            msgspec.json.decode(raw, type=Command, dec_hook=dec_hook)
        elif "kind" in item:
            msgspec.json.decode(raw, type=Event)
        elif item.get("type") in _CLIENT_TYPES or (item.get("type") == "presence" and "state" in item):
            msgspec.json.decode(raw, type=ClientMessage, dec_hook=dec_hook)
        else:
            msgspec.json.decode(raw, type=ServerMessage)

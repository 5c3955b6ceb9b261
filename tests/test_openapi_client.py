"""A client generated from the served /openapi.json by a well-known generator
(openapi-python-client) works against the real server: the document is usable as well as
valid. The generator runs offline, as a subprocess, into a temporary directory."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.identity import PASSWORD, unique_email

PACKAGE = "boardcast_generated_client"
_CONFIG = f"""\
project_name_override: boardcast-generated-client
package_name_override: {PACKAGE}
post_hooks: []
"""


async def _generate(spec: dict[str, Any], where: Path) -> str:
    (where / "openapi.json").write_text(json.dumps(spec))
    (where / "config.yaml").write_text(_CONFIG)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        "openapi.json",
        "--config",
        "config.yaml",
        "--meta",
        "none",
        cwd=where,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    return text


@pytest.fixture
def import_path(tmp_path: Path) -> Iterator[Path]:
    """A directory on sys.path for the generated package, taken off again afterwards."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


async def test_a_generated_client_calls_the_real_server(http, start_server, import_path: Path):
    srv = await start_server(auth="jwt", rate_limit=True)
    async with http.get(f"{srv.base}/openapi.json") as r:
        spec = await r.json()
    output = await _generate(spec, import_path)
    # the generator says "Warning(s) encountered while generating" for parts it had to skip
    assert "warning" not in output.lower(), output

    client_mod = _module("client")
    models = _module("models")
    api = {
        name: _module(f"api.{name}")
        for name in (
            "operations.health",
            "auth.register",
            "auth.login",
            "boards.create_board",
            "boards.get_board",
            "columns.create_column",
            "cards.create_card",
            "cards.list_cards",
            "cards.get_card",
            "cards.patch_card",
            "invitations.create_invitation",
        )
    }

    async with client_mod.Client(base_url=srv.base, raise_on_unexpected_status=True) as anon:
        health = await api["operations.health"].asyncio_detailed(client=anon)
        assert health.status_code == 200
        assert health.parsed.status == models.HealthStatus.OK
        assert health.parsed.rate_limiter.enabled is True
        assert health.parsed.node.boards_owned >= 0  # the generated client reads the node section

        email = unique_email("generated")
        reg = models.Register(email=email, password=PASSWORD, name="Generated")
        created = await api["auth.register"].asyncio_detailed(client=anon, body=reg)
        assert created.status_code == 201, created.content
        assert created.parsed.user.email == email
        login = await api["auth.login"].asyncio(
            client=anon, body=models.Login(email=email, password=PASSWORD)
        )
        assert isinstance(login, models.SessionOut)
        token = login.access_token
        # a documented refusal is parsed into the one error body
        bad = await api["auth.login"].asyncio(client=anon, body=models.Login(email=email, password="wrong"))
        assert isinstance(bad, models.ErrorBody)
        assert bad.error.code == models.ErrorCode.UNAUTHORIZED

    async with client_mod.AuthenticatedClient(
        base_url=srv.base, token=token, raise_on_unexpected_status=True
    ) as me:
        board = await api["boards.create_board"].asyncio_detailed(
            client=me, body=models.BoardCreate(title="Generated board")
        )
        assert board.status_code == 201
        assert int(board.headers["RateLimit-Remaining"]) >= 0
        board_id = board.parsed.id
        assert isinstance(board_id, uuid.UUID)
        column = await api["columns.create_column"].asyncio(
            board_id, client=me, body=models.ColumnCreate(title="Todo"), idempotency_key="col-1"
        )
        assert isinstance(column, models.Column)
        card = await api["cards.create_card"].asyncio(
            board_id, client=me, body=models.CardCreate(column_id=column.id, title="Write it")
        )
        assert isinstance(card, models.Card)
        patched = await api["cards.patch_card"].asyncio(
            board_id, card.id, client=me, body=models.CardPatch(description="now"), idempotency_key="k-1"
        )
        assert isinstance(patched, models.Card) and patched.description == "now"
        cards = await api["cards.list_cards"].asyncio(board_id, client=me, column_id=column.id)
        assert [c.id for c in cards.cards] == [card.id]
        snap = await api["boards.get_board"].asyncio(board_id, client=me)
        assert isinstance(snap, models.BoardSnapshot)
        assert snap.seq == 3 and [c.title for c in snap.columns] == ["Todo"]
        assert isinstance(snap.cards[0].rank, int)
        missing = await api["cards.get_card"].asyncio(board_id, uuid.uuid4(), client=me)
        assert isinstance(missing, models.ErrorBody)
        assert missing.error.code == models.ErrorCode.NOT_FOUND
        inv = await api["invitations.create_invitation"].asyncio(
            board_id, client=me, body=models.InvitationCreate(max_uses=3)
        )
        assert isinstance(inv, models.InvitationCreated) and inv.max_uses == 3

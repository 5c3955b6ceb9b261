"""Test helpers for signed-in callers: accounts made through the real REST API."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from typing import Any

import aiohttp

PASSWORD = "correct horse battery staple"
_seq = itertools.count(1)


@dataclasses.dataclass
class Account:
    user_id: str
    email: str
    name: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def unique_email(stem: str = "user") -> str:
    return f"{stem}-{next(_seq)}-{uuid.uuid4().hex[:8]}@example.test"


async def register(
    http: aiohttp.ClientSession,
    base: str,
    email: str | None = None,
    name: str | None = None,
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
) -> Account:
    email = email or unique_email()
    name = name or email.split("@")[0]
    async with http.post(
        f"{base}/api/v1/auth/register",
        json={"email": email, "password": password, "name": name},
        headers=headers,
    ) as r:
        assert r.status == 201, await r.text()
        body: dict[str, Any] = await r.json()
    return Account(
        user_id=body["user"]["id"],
        email=email,
        name=name,
        password=password,
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
    )


async def login(
    http: aiohttp.ClientSession, base: str, email: str, password: str = PASSWORD
) -> dict[str, Any]:
    async with http.post(f"{base}/api/v1/auth/login", json={"email": email, "password": password}) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def new_board(
    http: aiohttp.ClientSession, base: str, owner: Account, title: str = "Board", **extra: Any
) -> dict[str, Any]:
    async with http.post(f"{base}/api/v1/boards", json={"title": title, **extra}, headers=owner.headers) as r:
        assert r.status == 201, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def add_member(
    http: aiohttp.ClientSession, base: str, board_id: str, by: Account, who: Account, role: str
) -> dict[str, Any]:
    async with http.post(
        f"{base}/api/v1/boards/{board_id}/members",
        json={"user_id": who.user_id, "role": role},
        headers=by.headers,
    ) as r:
        assert r.status == 201, await r.text()
        body: dict[str, Any] = await r.json()
        return body


def ws_url_with_token(ws_url: str, token: str) -> str:
    return f"{ws_url}?access_token={token}"

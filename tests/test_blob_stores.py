"""The blob stores through one suite: the local store and the S3 store against a real
S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from storage.blobs import (
    BadKey,
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    LocalBlobStore,
    S3BlobStore,
    new_key,
    put_bytes,
    read_all,
)
from storage.blobs.local import INCOMING
from tests.s3server import ACCESS_KEY, SECRET_KEY, create_bucket, pending_multipart_uploads

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        s: BlobStore = LocalBlobStore(tmp_path / "blobs")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"test-{uuid.uuid4().hex[:12]}"
        await create_bucket(endpoint, bucket)
        s = await S3BlobStore.connect(
            bucket=bucket,
            endpoint_url=endpoint,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            prefix="boardcast/",
        )
    yield s
    await s.close()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def listed(store: BlobStore, namespace: str = "attachments") -> dict[str, int]:
    return {info.key: info.size async for info in store.scan(namespace)}


async def test_put_then_read_exists_scan_delete(store: BlobStore) -> None:
    key = new_key("attachments", uuid.uuid4())
    size = await store.put(key, chunks(b"hello ", b"", b"world"), content_type="text/plain", max_bytes=100)
    assert size == 11
    assert await store.exists(key)
    async with store.open(key) as blob:
        assert blob.size == 11
        assert b"".join([c async for c in blob]) == b"hello world"
    assert await listed(store) == {key: 11}
    await store.delete(key)
    assert not await store.exists(key)
    await store.delete(key)  # twice is fine
    assert await listed(store) == {}
    with pytest.raises(BlobNotFound):
        async with store.open(key):
            pass


async def test_empty_blob(store: BlobStore) -> None:
    key = new_key("attachments", "x")
    assert await store.put(key, chunks(), content_type="text/plain", max_bytes=10) == 0
    assert await read_all(store, key, 10) == b""


async def test_over_the_limit_leaves_nothing(store: BlobStore, tmp_path: Path) -> None:
    key = new_key("attachments", uuid.uuid4())
    with pytest.raises(BlobTooLarge):
        await store.put(key, chunks(b"x" * 60, b"y" * 50), content_type="text/plain", max_bytes=100)
    assert not await store.exists(key)
    assert await listed(store) == {}
    if isinstance(store, LocalBlobStore):
        assert list((tmp_path / "blobs" / INCOMING).iterdir()) == []
    # exactly the limit is fine
    assert await store.put(key, chunks(b"x" * 100), content_type="text/plain", max_bytes=100) == 100


async def test_a_failing_stream_leaves_nothing(store: BlobStore) -> None:
    key = new_key("attachments", uuid.uuid4())

    async def broken() -> AsyncIterator[bytes]:
        yield b"part of it"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put(key, broken(), content_type="text/plain", max_bytes=100)
    assert not await store.exists(key)
    assert await listed(store) == {}


async def test_large_blob_streams_in_parts(store: BlobStore) -> None:
    """11 MiB: three multipart parts on S3; read back in chunks, not whole."""
    if isinstance(store, S3BlobStore):
        store._part_bytes = 5 * MiB  # S3's smallest part
    key = new_key("attachments", uuid.uuid4())
    block = os.urandom(MiB)
    size = await store.put(key, chunks(*[block] * 11), content_type="application/zip", max_bytes=20 * MiB)
    assert size == 11 * MiB
    digest = hashlib.sha256()
    biggest = 0
    async with store.open(key) as blob:
        assert blob.size == 11 * MiB
        async for chunk in blob:
            digest.update(chunk)
            biggest = max(biggest, len(chunk))
    assert digest.digest() == hashlib.sha256(block * 11).digest()
    assert biggest <= MiB  # streamed, not read whole


async def test_multipart_over_the_limit_is_aborted(store: BlobStore, s3_endpoint: str) -> None:
    if not isinstance(store, S3BlobStore):
        pytest.skip("multipart uploads are S3's")
    store._part_bytes = 5 * MiB
    key = new_key("attachments", uuid.uuid4())
    with pytest.raises(BlobTooLarge):
        await store.put(key, chunks(*[b"z" * MiB] * 12), content_type="text/plain", max_bytes=11 * MiB)
    assert not await store.exists(key)
    assert await pending_multipart_uploads(s3_endpoint, store._bucket) == []


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "attachments/../../etc/passwd",
        "attachments/..",
        "attachments/.",
        "attachments/.hidden",
        "/etc/passwd",
        "attachments//x",
        "attachments/a\\..\\..\\b",
        "attachments/x/",
        "attachments",
        "",
        "Attachments/x",
        "attachments/x\x00y",
        "attachments/%2e%2e/x",
        "attachments/x y",
    ],
)
async def test_keys_that_could_leave_the_store_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(BadKey):
        await store.put(key, chunks(b"x"), content_type="text/plain", max_bytes=10)
    with pytest.raises(BadKey):
        await store.exists(key)
    with pytest.raises(BadKey):
        await store.delete(key)
    with pytest.raises(BadKey):
        async with store.open(key):
            pass


async def test_local_paths_stay_under_the_root(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    key = new_key("attachments", uuid.uuid4())
    await put_bytes(store, key, b"data", content_type="text/plain")
    assert store.path(key).is_relative_to((tmp_path / "blobs").resolve())
    assert os.listdir(tmp_path) == ["blobs"]


async def test_s3_presigned_url_serves_the_blob_with_its_headers(
    s3_endpoint: str, http: aiohttp.ClientSession
) -> None:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    await create_bucket(s3_endpoint, bucket)
    store = await S3BlobStore.connect(
        bucket=bucket, endpoint_url=s3_endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY
    )
    try:
        key = new_key("attachments", uuid.uuid4())
        await put_bytes(store, key, b"%PDF-1.4 test", content_type="application/pdf")
        url = await store.signed_url(
            key, expires_s=60, content_type="application/pdf", filename="Résumé.pdf", inline=False
        )
        assert url is not None and url.startswith(s3_endpoint)
        async with http.get(url) as r:
            assert r.status == 200
            assert await r.read() == b"%PDF-1.4 test"
            assert r.headers["Content-Type"] == "application/pdf"
            assert r.headers["Content-Disposition"].startswith('attachment; filename="R_sum_.pdf"')
            assert "filename*=UTF-8''R%C3%A9sum%C3%A9.pdf" in r.headers["Content-Disposition"]
        # (moto's server does not check signatures unless IAM is set up; a tampered URL is
        # refused by real S3. The server's own signed URLs are tested for tampering.)
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
        await store.check()
    finally:
        await store.close()


async def test_s3_check_fails_for_a_missing_bucket(s3_endpoint: str) -> None:
    from storage.blobs import BlobError

    store = await S3BlobStore.connect(
        bucket="no-such-bucket",
        endpoint_url=s3_endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )
    try:
        with pytest.raises(BlobError):
            await store.check()
    finally:
        await store.close()

"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2...), through aiobotocore.

Uploads stream: a blob smaller than one part is one PUT; a larger one is a multipart upload of
8 MiB parts (S3 wants at least 5 MiB for all but the last), so at most one part is in memory.
A multipart upload that fails or passes the size limit is aborted, so nothing is left behind
(an upload a crash interrupted is not visible as an object; a bucket lifecycle rule
"abort incomplete multipart uploads after 1 day" reclaims its parts, see the README).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from storage.blobs.base import CHUNK_BYTES, BlobError, BlobInfo, BlobNotFound, BlobTooLarge, check_key
from storage.blobs.media import content_disposition

PART_BYTES = 8 * 1024 * 1024
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class _ObjectReader:
    def __init__(self, body: Any, size: int) -> None:
        self._body = body
        self.size = size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._body.iter_chunks(CHUNK_BYTES):
                yield chunk
        except (BotoCoreError, ClientError, OSError) as e:
            raise BlobError(f"reading a blob failed: {e}") from e


class S3BlobStore:
    kind = "s3"

    def __init__(self, client: Any, bucket: str, prefix: str = "", part_bytes: int = PART_BYTES) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._part_bytes = part_bytes
        self._exit: contextlib.AsyncExitStack | None = None

    @classmethod
    async def connect(
        cls,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
    ) -> S3BlobStore:
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                region_name=region,
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=Config(
                    signature_version="s3v4",
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=30,
                ),
            )
        )
        store = cls(client, bucket, prefix)
        store._exit = stack
        return store

    def _name(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str, max_bytes: int) -> int:
        name = self._name(key)
        size = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise BlobTooLarge(max_bytes)
                buffer += chunk
                while len(buffer) >= self._part_bytes:
                    if upload_id is None:
                        started = await self._client.create_multipart_upload(
                            Bucket=self._bucket, Key=name, ContentType=content_type
                        )
                        upload_id = started["UploadId"]
                    part, buffer = bytes(buffer[: self._part_bytes]), buffer[self._part_bytes :]
                    parts.append(await self._part(name, upload_id, len(parts) + 1, part))
            if upload_id is None:
                await self._client.put_object(
                    Bucket=self._bucket, Key=name, Body=bytes(buffer), ContentType=content_type
                )
                return size
            if buffer:
                parts.append(await self._part(name, upload_id, len(parts) + 1, bytes(buffer)))
            await self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            upload_id = None
            return size
        except (BotoCoreError, ClientError) as e:
            raise BlobError(f"could not write blob {key!r}: {e}") from e
        finally:
            if upload_id is not None:
                with contextlib.suppress(BotoCoreError, ClientError):
                    await self._client.abort_multipart_upload(
                        Bucket=self._bucket, Key=name, UploadId=upload_id
                    )

    async def _part(self, name: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        done = await self._client.upload_part(
            Bucket=self._bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": done["ETag"]}

    @contextlib.asynccontextmanager
    async def open(self, key: str) -> AsyncIterator[_ObjectReader]:
        try:
            resp = await self._client.get_object(Bucket=self._bucket, Key=self._name(key))
        except ClientError as e:
            if _code(e) in _MISSING:
                raise BlobNotFound(key) from None
            raise BlobError(f"could not read blob {key!r}: {e}") from e
        except BotoCoreError as e:
            raise BlobError(f"could not read blob {key!r}: {e}") from e
        body = resp["Body"]
        try:
            yield _ObjectReader(body, int(resp["ContentLength"]))
        finally:
            body.close()

    async def exists(self, key: str) -> bool:
        try:
            await self._client.head_object(Bucket=self._bucket, Key=self._name(key))
        except ClientError as e:
            if _code(e) in _MISSING:
                return False
            raise BlobError(f"could not look up blob {key!r}: {e}") from e
        except BotoCoreError as e:
            raise BlobError(f"could not look up blob {key!r}: {e}") from e
        return True

    async def delete(self, key: str) -> None:
        try:
            await self._client.delete_object(Bucket=self._bucket, Key=self._name(key))
        except (BotoCoreError, ClientError) as e:
            raise BlobError(f"could not delete blob {key!r}: {e}") from e

    async def scan(self, namespace: str) -> AsyncIterator[BlobInfo]:
        start = len(self._prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            async for page in paginator.paginate(Bucket=self._bucket, Prefix=f"{self._prefix}{namespace}/"):
                for obj in page.get("Contents", ()):
                    yield BlobInfo(obj["Key"][start:], int(obj["Size"]), obj["LastModified"].timestamp())
        except (BotoCoreError, ClientError) as e:
            raise BlobError(f"could not list blobs: {e}") from e

    async def signed_url(
        self, key: str, *, expires_s: float, content_type: str, filename: str, inline: bool
    ) -> str | None:
        # S3 serves these two headers as the signature fixes them; it cannot be told to send
        # X-Content-Type-Options, so the disposition is what keeps a browser from rendering.
        url: str = await self._client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self._bucket,
                "Key": self._name(key),
                "ResponseContentType": content_type,
                "ResponseContentDisposition": content_disposition(filename, inline=inline),
            },
            ExpiresIn=max(1, int(expires_s)),
        )
        return url

    async def check(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self._bucket)
        except (BotoCoreError, ClientError) as e:
            raise BlobError(f"bucket {self._bucket!r} cannot be reached: {e}") from e

    async def close(self) -> None:
        if self._exit is not None:
            await self._exit.aclose()
            self._exit = None

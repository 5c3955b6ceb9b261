"""A real S3-compatible server for tests: moto's server mode in a subprocess on a free
127.0.0.1 port. Never a real cloud: the store is pointed at this endpoint with dummy keys."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

_START_TIMEOUT_S = 30.0
ACCESS_KEY = "testing"
SECRET_KEY = "testing-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Start ``moto_server`` on 127.0.0.1; yields its endpoint URL; stops it afterwards."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def create_bucket(endpoint: str, name: str) -> None:
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    ) as client:
        await client.create_bucket(Bucket=name)


async def pending_multipart_uploads(endpoint: str, bucket: str) -> list[str]:
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    ) as client:
        resp = await client.list_multipart_uploads(Bucket=bucket)
        return [u["Key"] for u in resp.get("Uploads", [])]

"""Load from several OS processes, released at the same moment."""

from __future__ import annotations

import asyncio


async def release_together(procs: list[asyncio.subprocess.Process], timeout_s: float = 20) -> list[bytes]:
    """Wait until every process has printed ``ready``, release them all at once (a ``go`` line
    on stdin: the barrier), and return what each printed after that. Every process must exit
    0; on any failure those still running are killed."""
    try:
        async with asyncio.timeout(timeout_s):
            for p in procs:
                assert p.stdout is not None
                assert (await p.stdout.readline()).strip() == b"ready"
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(b"go\n")
                await p.stdin.drain()
            outputs = await asyncio.gather(*(p.communicate() for p in procs))
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    assert [p.returncode for p in procs] == [0] * len(procs)
    return [out for out, _ in outputs]

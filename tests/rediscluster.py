"""A real local Redis Cluster for tests: three masters started from the machine's own
``redis-server`` in cluster mode, on free 127.0.0.1 ports, with their files in a temporary
folder. The slots are assigned and the nodes introduced directly (CLUSTER ADDSLOTSRANGE and
CLUSTER MEET), which is what ``redis-cli --cluster create`` does, without its one-second
waits. Nothing here touches the machine's own Redis."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

MASTERS = 3
SLOTS = 16384
_START_TIMEOUT_S = 10.0


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_ports(n: int) -> list[int]:
    """Ports whose cluster bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 45000)
        if port not in ports and _port_free(port) and _port_free(port + 10000):
            ports.append(port)
    return ports


def _wait(what: str, check: Callable[[], object], deadline: float) -> None:
    # Polled: these are other processes' states, with nothing to await.
    while True:
        try:
            if check():
                return
        except (redis.ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"local Redis Cluster: {what} within {_START_TIMEOUT_S}s")
        time.sleep(0.02)


@contextlib.contextmanager
def redis_cluster(folder: Path) -> Iterator[list[tuple[str, int]]]:
    """Start the cluster; yields its nodes as (host, port); stops it all at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    folder.mkdir(parents=True, exist_ok=True)
    ports = _free_ports(MASTERS)
    procs: list[subprocess.Popen[bytes]] = []
    clients: list[redis.Redis] = []
    try:
        for port in ports:
            procs.append(
                subprocess.Popen(
                    [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "2000",
                     "--dir", str(folder), "--save", "", "--appendonly", "no",
                     "--logfile", f"redis-{port}.log"],
                    cwd=folder,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT_S
        for port in ports:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
            clients.append(client)
            _wait(f"node {port} answers", client.ping, deadline)
        per = SLOTS // MASTERS
        for i, client in enumerate(clients):
            last = SLOTS - 1 if i == MASTERS - 1 else (i + 1) * per - 1
            client.execute_command("CLUSTER ADDSLOTSRANGE", i * per, last)
            client.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
        for port in ports[1:]:
            clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)

        def ok() -> bool:
            infos = [c.execute_command("CLUSTER INFO") for c in clients]  # parsed into a dict
            return all(i["cluster_state"] == "ok" and int(i["cluster_known_nodes"]) == MASTERS for i in infos)

        _wait("cluster_state:ok on every node", ok, deadline)
        yield [("127.0.0.1", port) for port in ports]
    finally:
        for client in clients:
            client.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

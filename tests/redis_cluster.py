"""A real Redis Cluster on loopback, made of embedded servers, for cluster-mode tests.

Three masters by default; with `replicas=1` each master gets a replica and a short
node timeout, so that killing a master makes its replica take over within seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

from redis import Redis
from redis.crc import key_slot

from broker.storage.embedded import EmbeddedRedis, free_port

SLOTS = 16384
# With replicas: a master silent this long is failed over (the default is 15 s).
FAILOVER_NODE_TIMEOUT_MS = 1000


class LocalCluster:
    def __init__(self, data_dir: Path, size: int = 3, replicas: int = 0) -> None:
        self.size = size
        count = size * (1 + replicas)
        # The default bus port (port + 10000) overflows for high free ports.
        self.bus_ports = [free_port() for _ in range(count)]
        timeout = ("--cluster-node-timeout", str(FAILOVER_NODE_TIMEOUT_MS)) if replicas else ()
        self.nodes = [
            EmbeddedRedis(
                data_dir / f"node{i}",
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str((data_dir / f"node{i}" / "nodes.conf").resolve()),
                    "--appendonly",
                    "no",
                    "--cluster-port",
                    str(self.bus_ports[i]),
                    *timeout,
                ),
            )
            for i in range(count)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def masters(self) -> list[EmbeddedRedis]:
        return self.nodes[: self.size]

    def start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        clients = [Redis(host="127.0.0.1", port=n.port, decode_responses=True) for n in self.nodes]
        try:
            share = SLOTS // self.size
            for i, client in enumerate(clients[: self.size]):
                last = SLOTS - 1 if i == self.size - 1 else (i + 1) * share - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
            for client in clients[1:]:
                client.execute_command(
                    "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, self.bus_ports[0]
                )
            self._wait(lambda: all(_known(c) == len(clients) for c in clients), "nodes meet")
            ids = [client.execute_command("CLUSTER", "MYID") for client in clients]
            for i, client in enumerate(clients[self.size :]):
                client.execute_command("CLUSTER", "REPLICATE", ids[i % self.size])

            def ready() -> bool:
                states = [client.execute_command("CLUSTER", "INFO") for client in clients]
                if not all("cluster_state:ok" in state for state in states):
                    return False
                wanted = (len(clients) - self.size) // self.size
                return all(
                    int(c.info("replication")["connected_slaves"]) >= wanted
                    for c in clients[: self.size]
                )

            self._wait(ready, "cluster ready")
            return self
        finally:
            for client in clients:
                client.close()

    @staticmethod
    def _wait(check: object, what: str, seconds: float = 30) -> None:
        assert callable(check)
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not within {seconds} s")
            time.sleep(0.05)

    def master_index_of(self, key: str) -> int:
        """Which of `masters` owns `key` (as `start` assigned the slots)."""
        return min(key_slot(key.encode()) // (SLOTS // self.size), self.size - 1)

    def replica_of(self, master: int) -> EmbeddedRedis:
        """The replica `start` gave `masters[master]` (with `replicas=1`)."""
        return self.nodes[self.size + master]

    def role(self, node: EmbeddedRedis) -> str:
        with Redis(port=node.port, decode_responses=True, socket_timeout=2) as client:
            return str(client.info("replication")["role"])

    def wait_for_replica_of(self, node: EmbeddedRedis, seconds: float = 30) -> None:
        def replicated() -> bool:
            with Redis(port=node.port, decode_responses=True, socket_timeout=2) as client:
                info = client.info("replication")
                online = [v for k, v in info.items() if k[:5] == "slave" and k[5:].isdigit()]
                synced = any(replica.get("state") == "online" for replica in online)
                return info["role"] == "master" and synced

        self._wait(replicated, f"a replica of {node.url}", seconds)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _known(client: Redis) -> int:
    return len(str(client.execute_command("CLUSTER", "NODES")).strip().splitlines())

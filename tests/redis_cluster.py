"""A real 3-node Redis Cluster on loopback, made of embedded servers, for cluster-mode tests."""

from __future__ import annotations

import time
from pathlib import Path

from redis import Redis

from broker.embedded import EmbeddedRedis, free_port

SLOTS = 16384


class LocalCluster:
    def __init__(self, data_dir: Path, size: int = 3) -> None:
        # The default bus port (port + 10000) overflows for high free ports.
        self.bus_ports = [free_port() for _ in range(size)]
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
                ),
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        clients = [Redis(host="127.0.0.1", port=n.port, decode_responses=True) for n in self.nodes]
        try:
            share = SLOTS // len(clients)
            for i, client in enumerate(clients):
                last = SLOTS - 1 if i == len(clients) - 1 else (i + 1) * share - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
            for client in clients[1:]:
                client.execute_command(
                    "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, self.bus_ports[0]
                )
            for _ in range(200):
                states = [client.execute_command("CLUSTER", "INFO") for client in clients]
                if all("cluster_state:ok" in state for state in states):
                    return self
                time.sleep(0.05)
            raise RuntimeError(f"cluster did not become ready: {states}")
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

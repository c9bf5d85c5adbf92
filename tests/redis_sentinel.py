"""A master, its replica and three sentinels on loopback (the machine's redis-server)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from redis import Redis

from broker.storage.embedded import EmbeddedRedis, free_port

MASTER_NAME = "mymaster"
# Fast failover for tests: the master counts as down after 1 s without answers.
DOWN_AFTER_MS = 1000


def redis_server() -> Path:
    found = shutil.which("redis-server")
    assert found, "the Sentinel tests need redis-server (Redis 7.0) on the PATH"
    return Path(found)


class LocalSentinel:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.master = EmbeddedRedis(data_dir / "a", redis_server())
        self.replica = EmbeddedRedis(
            data_dir / "b", redis_server(), extra_args=self._replica_of(self.master)
        )
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @staticmethod
    def _replica_of(master: EmbeddedRedis) -> tuple[str, ...]:
        return ("--replicaof", "127.0.0.1", str(master.port))

    @property
    def addresses(self) -> str:
        """The value of BROKER_REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> LocalSentinel:
        self.master.start()
        self.replica.start()
        for i, port in enumerate(self.sentinel_ports):
            folder = self.data_dir / f"sentinel{i}"
            folder.mkdir(parents=True)
            config = folder / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"logfile {folder / 'sentinel.log'}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            )
            self._sentinels.append(
                subprocess.Popen([str(redis_server()), str(config), "--sentinel"])
            )
        self.wait_for_replicas(self.master, 1)
        for port in self.sentinel_ports:
            self._wait_until(lambda p=port: self._sees_replica(p), 20, "sentinels see the replica")
        return self

    def _sees_replica(self, port: int) -> bool:
        try:
            with Redis(port=port, decode_responses=True, socket_timeout=1) as sentinel:
                return bool(sentinel.sentinel_slaves(MASTER_NAME))
        except OSError:
            return False

    def master_port(self) -> int:
        """The master the sentinels name now."""
        with Redis(port=self.sentinel_ports[0], decode_responses=True) as sentinel:
            _, port = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
            return int(port)

    def node(self, port: int) -> EmbeddedRedis:
        return self.master if self.master.port == port else self.replica

    def wait_for_failover(self, old_port: int, seconds: float = 30) -> int:
        self._wait_until(lambda: self.master_port() != old_port, seconds, "failover")
        return self.master_port()

    @staticmethod
    def wait_for_replicas(node: EmbeddedRedis, count: int, seconds: float = 30) -> None:
        def enough() -> bool:
            with Redis(port=node.port, decode_responses=True) as client:
                info = client.info("replication")
                online = [v for k, v in info.items() if k.startswith("slave") and k[5:].isdigit()]
                return sum(1 for v in online if v.get("state") == "online") >= count

        LocalSentinel._wait_until(enough, seconds, f"{count} replica(s) online")

    @staticmethod
    def _wait_until(check: object, seconds: float, what: str) -> None:
        assert callable(check)
        deadline = time.monotonic() + seconds
        while not check():
            assert time.monotonic() < deadline, f"{what} within {seconds} s"
            time.sleep(0.1)

    def stop(self) -> None:
        for sentinel in self._sentinels:
            sentinel.kill()
            sentinel.wait()
        self.master.stop()
        self.replica.stop()

"""Private Redis processes for the tests: a redis-server (optionally TLS, optionally a replica)
and a Sentinel (`redis-server --sentinel`) monitoring it, each on a free loopback port in the
test's own directory. The test run's shared Redis is never touched."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from tests.live import free_port
from tests.waiting import wait_until

MASTER_NAME = "symphainy-test"


def redis_server_binary() -> str:
    """The redis-server binary; without it the test skips, or fails with SYMPHAINY_REQUIRE_SERVICES=1."""
    binary = shutil.which("redis-server")
    if binary is None:
        if settings.REQUIRE_SERVICES:
            pytest.fail("SYMPHAINY_REQUIRE_SERVICES=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    return binary


@contextlib.contextmanager
def _tls_socket(port: int, ca_file: Path):
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), 0.5) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        yield s


class Certificates:
    """A CA and a server certificate for 127.0.0.1 signed by it, made by openssl."""

    def __init__(self, workdir: Path) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            if settings.REQUIRE_SERVICES:
                pytest.fail("SYMPHAINY_REQUIRE_SERVICES=1 but openssl is not installed")
            pytest.skip("openssl is not installed")
        self.dir = workdir
        self.ca, self.ca_key = workdir / "ca.pem", workdir / "ca.key"
        self.cert, self.key = workdir / "server.pem", workdir / "server.key"

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], check=True, capture_output=True, cwd=workdir, timeout=60)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=symphainy test CA",
            "-keyout", str(self.ca_key), "-out", str(self.ca))
        csr = workdir / "server.csr"
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(self.key), "-out", str(csr))
        ext = workdir / "server.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", str(ext), "-out", str(self.cert))

    def server_args(self) -> list[str]:
        # Clients are not asked for certificates: the service authenticates by password.
        return ["--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
                "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no"]


class RedisProcess:
    """One redis-server (or sentinel) of the test's own."""

    def __init__(self, workdir: Path, name: str, *, tls: Certificates | None = None) -> None:
        self.port = free_port()
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.process: subprocess.Popen | None = None
        self.log = self.dir / "redis.log"

    def _args(self) -> list[str]:
        port_args = ["--port", "0", "--tls-port", str(self.port), *self.tls.server_args()] if self.tls \
            else ["--port", str(self.port)]
        return [*port_args, "--bind", "127.0.0.1", "--dir", str(self.dir), "--logfile", str(self.log)]

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [redis_server_binary(), *self._args(), "--save", "", "--appendonly", "no"]

    def start(self) -> "RedisProcess":
        """Start (or start again, on the same port) and wait until it answers PING."""
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            with contextlib.suppress(OSError):
                if self._pings():
                    return True
            if self.process.poll() is not None:
                raise RuntimeError(f"private redis-server on {self.port} exited:\n{self._log()}")
            return False

        wait_until(up, timeout=10, message=lambda: f"private redis-server on {self.port} to start:\n{self._log()}")
        return self

    def _log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _pings(self) -> bool:
        if self.tls:
            with _tls_socket(self.port, self.tls.ca) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Replica(RedisProcess):
    def __init__(self, workdir: Path, name: str, master: RedisProcess, **kwargs) -> None:
        super().__init__(workdir, name, **kwargs)
        self.master = master

    def _args(self) -> list[str]:
        tls = ["--tls-replication", "yes"] if self.tls else []
        return [*super()._args(), "--replicaof", "127.0.0.1", str(self.master.port), *tls]


class SentinelProcess(RedisProcess):
    """`redis-server <conf> --sentinel`, monitoring `master` as MASTER_NAME with a quorum of
    one and a short down-after, so a killed master is failed over within seconds."""

    def __init__(self, workdir: Path, name: str, master: RedisProcess, **kwargs) -> None:
        super().__init__(workdir, name, **kwargs)
        self.master = master

    def command(self) -> list[str]:
        conf = self.dir / "sentinel.conf"  # sentinel rewrites it: it must be a writable file
        lines = [
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 1",
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
            f"sentinel failover-timeout {MASTER_NAME} 5000",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self.tls:
            lines.append("tls-replication yes")  # sentinel reaches the master over TLS too
        conf.write_text("\n".join(lines) + "\n")
        return [redis_server_binary(), str(conf), "--sentinel", *self._args()]

    def master_address(self) -> tuple[str, int] | None:
        import redis

        kwargs = {"ssl": True, "ssl_ca_certs": str(self.tls.ca)} if self.tls else {}
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, **kwargs)
        try:
            address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        finally:
            client.close()
        if not address:
            return None
        host = address[0].decode() if isinstance(address[0], bytes) else address[0]
        return host, int(address[1])

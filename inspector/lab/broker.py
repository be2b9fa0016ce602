"""A local MQTT broker for the demo and the tests: Mosquitto when installed, else amqtt.

Production stations use a real broker (``deploy/mosquitto/``); this module exists so
``make demo`` runs on a fresh machine without root, and so tests can start, stop and
restart a real Mosquitto on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below the kernel's ephemeral range when possible.

    A client that keeps reconnecting to a port in the ephemeral range while nothing listens
    there can be handed that very port as its source: the socket connects to itself, sends
    CONNECT to itself and waits for a CONNACK that never comes. Brokers listen on 1883; the
    demo's and the tests' brokers stay out of the range too.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(50):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


class Mosquitto:
    """A Mosquitto process on 127.0.0.1:port (anonymous, no persistence). Restartable."""

    protocol = "5"

    def __init__(
        self,
        port: int | None = None,
        binary: str | None = None,
        persistence: bool = False,
        users: dict[str, str] | None = None,
    ) -> None:
        self.binary = binary or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self.conf = self._dir / "mosquitto.conf"
        persist = (
            f"persistence true\npersistence_location {self._dir}/\n"
            if persistence
            else "persistence false\n"
        )
        auth = "allow_anonymous true\n"
        if users:  # password authentication, as on a real line
            pw = self._dir / "passwords"
            pw.touch()
            for user, password in users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pw), user, password],
                    check=True,
                    capture_output=True,
                )
            auth = f"allow_anonymous false\npassword_file {pw}\n"
        # as root, Mosquitto would switch to the 'mosquitto' user, who can't read our temp dir
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n{user}{auth}{persist}max_queued_messages 10000\n"
        )
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())

    def start(self) -> Mosquitto:
        log_file = open(self._dir / "mosquitto.log", "ab")  # noqa: SIM115 (kept open with the process)
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)], stdout=log_file, stderr=subprocess.STDOUT
        )
        if not wait_for_port(self.host, self.port):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, down_s: float = 0.0, hard: bool = True) -> None:
        """Kill (or stop cleanly, saving persistent sessions) and start again after down_s."""
        self.kill() if hard else self.stop()
        time.sleep(down_s)
        self.start()


class Amqtt:
    """amqtt, a pure-Python broker (MQTT 3.1.1 only), in a thread of its own."""

    protocol = "3.1.1"

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt", daemon=True)
        self._broker = None

    def start(self) -> Amqtt:
        from amqtt.broker import Broker

        logging.getLogger("amqtt").setLevel(logging.CRITICAL)  # port probes look like bad clients
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        self._thread.start()

        async def boot():
            self._broker = Broker(config)
            await self._broker.start()

        asyncio.run_coroutine_threadsafe(boot(), self._loop).result(15)
        if not wait_for_port(self.host, self.port):
            raise RuntimeError(f"amqtt did not start on port {self.port}")
        return self

    def stop(self) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def local_broker(prefer: str = "auto"):
    """Start Mosquitto if it is installed (or asked for), else amqtt."""
    if prefer == "mosquitto" or (prefer == "auto" and Mosquitto.available()):
        return Mosquitto().start()
    return Amqtt().start()

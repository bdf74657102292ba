"""A real S3 endpoint on loopback for the test suite (moto's threaded server).

A real HTTP server, rather than patching aioboto3, exercises the transport, the
signing and the error translation exactly as MinIO or S3 would in production.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

S3_REGION = "us-east-1"  # other regions need a LocationConstraint on create_bucket
S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Start moto once per session and yield its endpoint URL (``http://127.0.0.1:PORT``)."""
    werkzeug_logger = logging.getLogger("werkzeug")
    previous_level = werkzeug_logger.level
    werkzeug_logger.setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()  # port=0: the OS chose a free port
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        werkzeug_logger.setLevel(previous_level)


@pytest.fixture
def s3_reset(s3_server: str) -> str:
    """Return the endpoint URL with every bucket and object of earlier tests gone."""
    request = urllib.request.Request(f"{s3_server}/moto-api/reset", method="POST")
    # A sync fixture, so this blocking call never runs inside the event loop.
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    return s3_server


class S3Process:
    """moto's S3 server in a process of its own, so a test can SIGSTOP or kill it.

    A restarted server keeps its port and starts empty, like a store whose data is lost.
    """

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1) as response:
                    response.read()
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()

"""A real S3 endpoint on loopback for the test suite (moto's threaded server).

A real HTTP server, rather than patching aioboto3, exercises the transport, the
signing and the error translation exactly as MinIO or S3 would in production.
"""

from __future__ import annotations

import logging
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

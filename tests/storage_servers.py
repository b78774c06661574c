"""Real servers on loopback for the object-storage tests: a plain HTTP server over a folder (with paths that fail
the way networks do), and an S3-compatible server (moto) when it is installed."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder. Under ``/flaky/`` the first GET of every tar answers 503; under ``/cut/`` the first GET of
    every tar sends half its bytes and drops the connection. Every later request is served normally."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _mode(self) -> str:
        for mode in ("flaky", "cut"):
            if self.path.startswith(f"/{mode}/"):
                self.path = self.path[len(mode) + 1 :]
                return mode
        return ""

    def do_HEAD(self) -> None:
        self._mode()
        super().do_HEAD()

    def do_GET(self) -> None:
        mode = self._mode()
        failed: set[str] = self.server.failed  # type: ignore[attr-defined]
        key = f"{mode}:{self.path}"
        if mode and self.path.endswith(".tar") and key not in failed:
            failed.add(key)
            if mode == "flaky":
                self.send_error(503, "busy, try again")
                return
            data = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@contextmanager
def http_server(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1; yields the base URL (``http://127.0.0.1:PORT``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    server.failed = set()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def s3_server() -> Iterator[str]:
    """An S3-compatible server (moto) on 127.0.0.1; yields its endpoint URL. Import errors propagate (callers
    skip on them)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextmanager
def s3_holding(local: Path, dest: str) -> Iterator[str]:
    """A fresh local S3 server holding the folder ``local`` at ``dest`` (``bucket/prefix``); yields
    ``s3://dest``. Meanwhile credentials and the endpoint are in the environment, as a user's would be; the
    environment is restored afterwards. Skips the test without the test extra (s3fs, moto[server])."""
    import os

    import pytest

    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401 - the optional extra this exercises
    except ImportError as err:
        pytest.skip(f"S3 tests need the test extra (s3fs, moto[server]): {err}")
    saved = dict(os.environ)
    with s3_server() as endpoint:
        os.environ.update({"AWS_ACCESS_KEY_ID": "medst-test", "AWS_SECRET_ACCESS_KEY": "medst-test",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})  # fmt: skip
        try:
            import fsspec

            fs = fsspec.filesystem("s3", skip_instance_cache=True)
            fs.mkdir(dest.split("/", 1)[0])
            fs.put(str(local), dest, recursive=True)
            yield f"s3://{dest}"
        finally:
            os.environ.clear()
            os.environ.update(saved)

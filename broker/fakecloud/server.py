"""Serving the fake IBM Cloud: a real HTTP server (Werkzeug, threaded) on loopback, in a thread for tests
or in the foreground for ``drbroker fake-ibmcloud``."""

from __future__ import annotations

import logging
import threading

from werkzeug.serving import BaseWSGIServer, make_server

from broker.fakecloud.app import create_app
from broker.fakecloud.state import FakeState


class FakeCloudServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, step_seconds: float = 1.0,
                 token_ttl: int = 3600) -> None:
        self.state = FakeState(step_seconds=step_seconds, token_ttl=token_ttl)
        self.app = create_app(self.state)
        self._server: BaseWSGIServer = make_server(host, port, self.app, threaded=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def url(self) -> str:
        return f"http://{self._server.server_address[0]}:{self.port}"

    def start(self) -> FakeCloudServer:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-ibmcloud", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

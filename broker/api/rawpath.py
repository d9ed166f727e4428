"""Route on the raw request path, so that IBM Cloud's URL-encoded CRN ids (with ``%2F``) reach the broker.

WSGI servers decode ``PATH_INFO``, turning ``a%2Fabc`` into ``a/abc`` and so into an extra path segment
(a 404). For the broker's own routes this middleware puts the still-encoded path back, taken from
``RAW_URI`` (gunicorn, Werkzeug) or ``REQUEST_URI``; the views decode each id after matching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

PREFIXES = ("/v2/", "/bluemix_v1/", "/dashboard/")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RawPathMiddleware:
    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(PREFIXES):
            raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
            if raw:
                raw = raw.split("?", 1)[0]
                if "://" in raw:  # absolute-form request target
                    raw = "/" + raw.split("://", 1)[1].partition("/")[2]
            else:
                raw = quote(path.encode("latin-1").decode("utf-8", "replace"), safe="/")
            environ["PATH_INFO"] = raw
            environ["drbroker.raw_path"] = True
        return self.app(environ, start_response)

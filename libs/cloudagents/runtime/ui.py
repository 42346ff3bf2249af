"""The run viewer at ``/ui``: a page, a script and a style sheet, served by the api from the
package (``cloudagents/ui/``), no CDN and no build step.

The three files hold no data, so they are served without authentication (a browser's navigation
cannot send a bearer token); everything the page shows comes from the api's authenticated routes.
The page asks for a token once, keeps it in ``sessionStorage`` and sends it as
``Authorization: Bearer`` on every request; for the event streams, which a browser opens without
headers (``EventSource``, ``WebSocket``), it also sets the ``cloudagents_token`` cookie that
:func:`cloudagents.runtime.auth.authenticate` accepts on those routes only (see there).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from urllib.parse import quote

from starlette.responses import JSONResponse, Response

UI_PATH = "/ui"
_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
# Only the page's own files and the api itself: no inline script, no other origin, no framing.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def viewer_link(api_url: str, token: str | None) -> str:
    """The viewer's address; with ``token``, one that signs in: the token rides in the fragment,
    which browsers never send to a server, and the page removes it from the address bar."""
    base = api_url.rstrip("/") + UI_PATH
    return f"{base}#token={quote(token, safe='')}" if token else base


def is_ui_path(path: str) -> bool:
    return path == UI_PATH or path.startswith(UI_PATH + "/")


@cache
def _asset(name: str) -> bytes:
    return resources.files("cloudagents").joinpath("ui", name).read_bytes()


def ui_response(path: str) -> Response:
    """``/ui`` (the page) or ``/ui/<file>``; 404 for anything else under ``/ui``."""
    name = path.removeprefix(UI_PATH).strip("/") or "index.html"
    media_type = _ASSETS.get(name)
    if media_type is None:
        return JSONResponse({"error": f"no such file: {path}"}, status_code=404)
    return Response(
        _asset(name),
        media_type=media_type,
        headers={
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )

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

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloudagents.runtime.auth import Principal
from cloudagents.runtime.deps import Deps

UI_PATH = "/ui"
ASSETS = {
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


@cache
def _asset(name: str) -> bytes:
    return resources.files("cloudagents").joinpath("ui", name).read_bytes()


def static_response(
    content: bytes, media_type: str, *, policy: str = _CSP, cache: str = "no-cache"
) -> Response:
    """A file the api serves itself (the viewer's, Swagger UI's) under a strict policy."""
    return Response(
        content,
        media_type=media_type,
        headers={
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": cache,
        },
    )


def no_such_file(request: Request) -> Response:
    return JSONResponse({"error": f"no such file: {request.url.path}"}, status_code=404)


async def ui_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """``GET /ui`` (the page) or ``/ui/{file}``; 404 for a file the viewer does not have."""
    name = params.get("file", "index.html")
    media_type = ASSETS.get(name)
    if media_type is None:
        return no_such_file(request)
    return static_response(_asset(name), media_type)

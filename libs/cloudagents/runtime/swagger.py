"""Swagger UI at ``/docs``: the api's OpenAPI document (``/openapi.json``) as a page to read and
try, served by the api itself, no CDN. Swagger UI's files come from the ``swagger-ui-py``
package (its ``static/`` folder, read without importing the package's web-framework glue); the
page and the script that starts it are ours (``cloudagents/ui/docs.html``, ``docs.js``), since
the policy allows no inline script.

Like ``/ui``, the files hold no data and need no token; "Authorize" in the page takes the bearer
token that the operations it tries send.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from cloudagents.runtime.auth import Principal
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.ui import no_such_file, static_response

DOCS_PATH = "/docs"
# Ours, from the cloudagents package: the page and its start-up script.
_OWN = {
    "index.html": ("docs.html", "text/html; charset=utf-8"),
    "docs.js": ("docs.js", "text/javascript; charset=utf-8"),
}
# Swagger UI's distribution files the page loads.
SWAGGER_FILES = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
FILES = (*_OWN, *SWAGGER_FILES)
# The viewer's policy; Swagger UI also shows the schemas' example images and icons as data: URIs.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def swagger_ui_dir() -> Path:
    """``swagger_ui/static`` of the installed ``swagger-ui-py``."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (a dependency in pyproject.toml)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@cache
def _read(name: str) -> bytes:
    if name in _OWN:
        return resources.files("cloudagents").joinpath("ui", _OWN[name][0]).read_bytes()
    return (swagger_ui_dir() / name).read_bytes()


async def docs_route(
    request: Request, deps: Deps, params: dict[str, str], principal: Principal
) -> Response:
    """``GET /docs`` (the page) or ``/docs/{file}``; 404 for any other file."""
    name = params.get("file", "index.html")
    if name in _OWN:
        return static_response(_read(name), _OWN[name][1], policy=_CSP)
    if name in SWAGGER_FILES:
        # Versioned with the package: a browser may keep them for a day.
        return static_response(
            _read(name), SWAGGER_FILES[name], policy=_CSP, cache="public, max-age=86400"
        )
    return no_such_file(request)

"""The router of the api's route table: templates compiled with their literal parts escaped,
declaration order, the methods a path answers, HEAD on public GET routes only, ids checked."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import Response

from cloudagents.runtime.auth import Principal
from cloudagents.runtime.deps import Deps
from cloudagents.runtime.routing import Route, Router, compile_template, valid_id


async def answer(request: Request, deps: Deps, params: dict[str, str], who: Principal) -> Response:
    return Response()


def test_templates_match_one_segment_per_parameter_and_escape_the_rest() -> None:
    pattern = compile_template("/runs/{run_id}/approvals/{approval_id}")
    found = pattern.match("/runs/r-1/approvals/a.2")
    assert found is not None and found.groupdict() == {"run_id": "r-1", "approval_id": "a.2"}
    assert pattern.match("/runs/r/1/approvals/a") is None
    assert pattern.match("/runs/r-1/approvals/a/extra") is None
    assert compile_template("/openapi.json").match("/openapiXjson") is None


def test_the_router_resolves_in_order_and_lists_the_methods_a_path_answers() -> None:
    router = Router(
        [
            Route("GET", "/docs", answer, "page", (200,), public=True),
            Route("POST", "/runs", answer, "start", (202,)),
            Route("GET", "/runs", answer, "list", (200,)),
            Route("GET", "/runs/{run_id}", answer, "one", (200,)),
        ]
    )
    found = router.resolve("GET", "/runs/r-1")
    assert found.route is not None and found.route.summary == "one"
    assert found.params == {"run_id": "r-1"}
    missing = router.resolve("DELETE", "/runs")
    assert missing.route is None and missing.allowed == ("POST", "GET")
    assert router.resolve("GET", "/nowhere").allowed == ()
    head = router.resolve("HEAD", "/docs").route
    assert head is not None and head.summary == "page"  # a public GET answers HEAD
    assert router.resolve("HEAD", "/runs").route is None  # an authenticated one does not


def test_a_route_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="declared twice: GET /runs"):
        Router(
            [Route("GET", "/runs", answer, "a", (200,)), Route("GET", "/runs", answer, "b", (200,))]
        )


def test_operation_ids_follow_method_and_path() -> None:
    route = Route("POST", "/runs/{run_id}/approvals/{approval_id}", answer, "decide", (200,))
    assert route.operation_id == "post_runs_run_id_approvals_approval_id"
    assert route.path_params == ["run_id", "approval_id"]


@pytest.mark.parametrize("value", ["..", ".", "__name__", "a" * 301, "a b", ""])
def test_ids_firestore_cannot_store_are_not_valid(value: str) -> None:
    assert not valid_id(value)


def test_usable_ids_are_valid() -> None:
    assert valid_id("run-1:a.b_C")

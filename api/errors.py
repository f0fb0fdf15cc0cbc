"""The API's errors: `ApiError` (a refusal of the API itself, with its status and a stable
`code`), and the one table that gives each ledger error class its HTTP status; one handler
that writes application/problem+json (RFC 9457)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.metrics import PROBLEMS
from api.schemas import UNSAFE  # the characters the edge refuses in a path or query
from domain.oversight import ActionRefusal
from ledger import errors as le

PROBLEM = "application/problem+json"


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        keeps_writes: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or code.replace("_", " ").capitalize()
        self.headers = headers
        self.keeps_writes = keeps_writes  # the request's writes are committed all the same (api/deps.py)
        self.extra = extra


# Each ledger refusal's HTTP status: the one place a domain error meets HTTP.
STATUS: dict[type[le.LedgerError], int] = {
    le.VisitNotFound: 404,
    le.PaymentNotFound: 404,
    le.RefundNotFound: 404,
    le.NothingToPay: 409,
    le.AmountExceedsBalance: 409,
    le.PaymentConflict: 409,
    le.RefundNotManual: 409,
    le.NoCredit: 409,
    le.AmountMismatch: 400,
}


# The visit workflow's refusals of an operator's action or a dispute step (the `operator_action`
# update's ApplicationError type, which is also the problem's `code`), each with its HTTP status.
REFUSALS: dict[str, int] = {
    ActionRefusal.invalid_action: 409,  # does not fit the visit: waive more than owed, settled...
    ActionRefusal.same_operator: 409,  # a write-off approved by the operator who asked for it
    ActionRefusal.dispute_open: 409,  # the visit has an open dispute already
    ActionRefusal.approval_not_found: 404,
    ActionRefusal.dispute_not_found: 404,
}


def status_of(error: type[le.LedgerError]) -> int:
    return next(STATUS[k] for k in error.__mro__ if k in STATUS)


class Problem(BaseModel):
    """The error body every route may answer with (RFC 9457); some add fields, such as
    `errors` (the invalid fields), `stage` and `allowed`, `request_id`."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str


def problem(
    status: int, code: str, detail: str, title: str | None = None, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    PROBLEMS.labels(code).inc()
    body = {
        "type": f"https://yihoufu.example/problems/{code}",
        "title": title or code.replace("_", " ").capitalize(),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def responses(*answers: int | type[le.LedgerError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI: the error answers a route declares, as statuses or as the ledger errors it may raise."""
    statuses = dict.fromkeys(a if isinstance(a, int) else status_of(a) for a in answers)
    return {s: {"model": Problem, "content": {PROBLEM: {}}} for s in statuses}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.detail, exc.title, exc.headers, **exc.extra)

    @app.exception_handler(le.LedgerError)
    async def _ledger_error(_: Request, exc: le.LedgerError) -> JSONResponse:
        return problem(status_of(type(exc)), exc.code, exc.detail, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"loc": list(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        where = ", ".join(".".join(str(p) for p in f["loc"]) for f in fields)
        return problem(422, "invalid_request", f"invalid fields: {where}", "Invalid request", errors=fields)

    @app.exception_handler(Exception)  # the last resort (Starlette's outermost layer): never a plain-text 500
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return problem(500, "internal_error", "something went wrong on our side; it has been logged")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8, ...)
            return problem(
                422, "invalid_request", "the body could not be decoded: send JSON in UTF-8", "Invalid request"
            )
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of the path, not just those of the first route matched
            headers["Allow"] = ", ".join(
                m
                for m in METHODS
                if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in request.app.router.routes)
            )
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), headers=headers or None)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
GUARDED = ("/v1/his/", "/v1/ops/", "/v1/patient/")
PUBLIC = {"/v1/patient/sms-code", "/v1/patient/login"}  # the patient paths open to anyone


def document(app: FastAPI) -> None:
    """OpenAPI as the API answers: every error is application/problem+json, and each operation
    declares the 4xx the edge gives any request (401 where guarded, 413 and 422 for a body,
    422 for control characters anywhere), besides those its route declares."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        ref = {"$ref": "#/components/schemas/Problem"}
        for path, operations in spec.get("paths", {}).items():
            for operation in operations.values():
                for parameter in operation.get("parameters", []):  # the edge refuses control characters
                    if parameter.get("in") not in ("path", "query"):
                        continue
                    for schema in [parameter.get("schema", {}), *parameter.get("schema", {}).get("anyOf", [])]:
                        if schema.get("type") == "string" and not {"pattern", "enum", "const"} & set(schema):
                            schema["pattern"] = f"^[^{UNSAFE}]*$"
                answers = operation.setdefault("responses", {})
                statuses = {int(s) for s in answers if s.isdigit() and int(s) >= 400} | {422}
                if path.startswith(GUARDED) and path not in PUBLIC:
                    statuses.add(401)
                if "requestBody" in operation:
                    statuses.add(413)
                for status in statuses:
                    answer = answers.setdefault(str(status), {})
                    answer["description"] = answer.get("description") or HTTPStatus(status).phrase
                    answer["content"] = {PROBLEM: {"schema": ref}}
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        schemas["Problem"] = Problem.model_json_schema()
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to own the schema

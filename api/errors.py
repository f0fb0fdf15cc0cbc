"""One exception type with a status and a stable `code`; one handler that writes
application/problem+json (RFC 9457)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM = "application/problem+json"


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, *, title: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or code.replace("_", " ").capitalize()
        self.headers = headers
        self.extra = extra


class Problem(BaseModel):
    """The error body every route may answer with."""

    type: str
    title: str
    status: int
    detail: str
    code: str


def problem(status: int, code: str, detail: str, title: str | None = None,
            headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    from api.metrics import PROBLEMS

    PROBLEMS.labels(code).inc()
    body = {"type": f"https://yihoufu.example/problems/{code}", "title": title or code.replace("_", " ").capitalize(),
            "status": status, "detail": detail, "code": code, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI: the error answers a route declares."""
    return {s: {"model": Problem, "content": {PROBLEM: {}}} for s in statuses}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.code, exc.detail, exc.title, exc.headers, **exc.extra)

    from db.payments import PaymentProblem

    @app.exception_handler(PaymentProblem)
    async def _payment_problem(_: Request, exc: PaymentProblem) -> JSONResponse:
        return problem(exc.status, exc.code, exc.detail, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"loc": list(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        where = ", ".join(".".join(str(p) for p in f["loc"]) for f in fields)
        return problem(422, "invalid_request", f"invalid fields: {where}", "Invalid request", errors=fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

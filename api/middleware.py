"""The API's edge, before any route runs (pure ASGI): who is calling is known before the
body is read, a body has a size limit, every answer carries the security headers and a
request id, and no answer is ever a plain-text 500."""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

import observability
from api import tokens
from api.errors import PUBLIC, problem
from api.schemas import UNSAFE_CHAR
from config import Settings

log = logging.getLogger("yihoufu.api.edge")
access = logging.getLogger("yihoufu.access")  # one line per request (YHF_ACCESS_LOG)
# a mainland mobile or resident ID number, wherever it stands in a path (a sandbox route takes one)
PERSONAL_NUMBER = re.compile(r"(?<![0-9])(?:1[3-9][0-9]{9}|[0-9]{17}[0-9Xx])(?![0-9A-Za-z])")

ENGINE_RETRY_AFTER = "5"  # seconds: what a caller waits before asking again while Temporal is away

APP_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; manifest-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI and ReDoc are pages FastAPI writes with an inline script and assets from a CDN
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
# JSON answers and the printable receipt (its own inline style; no script anywhere)
API_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # WeChat Pay's H5 page checks that the patient comes from the hospital's domain: keep the origin
    "referrer-policy": "strict-origin-when-cross-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
}
HSTS = "max-age=31536000; includeSubDomains"


class BodyTooLarge(Exception):
    pass


def engine_down(exc: BaseException | None) -> bool:
    """Temporal could not be reached (or did not answer in time), here or behind what was raised."""
    for _ in range(4):
        if exc is None:
            return False
        if isinstance(exc, RPCError) and exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return True
        if isinstance(exc, WorkflowUpdateRPCTimeoutOrCancelledError):
            return True
        if isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect"):  # the lazy client
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _where(exc: BaseException) -> str:
    """Where it failed, without the exception's message (it may quote SQL parameters: personal data)."""
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    return " < ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}" for f in reversed(frames))


class Answer:
    """What a request sends back, with the edge's headers and the request id on its start; it
    remembers whether the answer has started (after that, nothing else can be said)."""

    def __init__(self, send: Send, headers: Callable[[], dict[str, str]], request_id: str) -> None:
        self._send = send
        self._headers = headers
        self.request_id = request_id
        self.started = False
        self.status: int | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            out = MutableHeaders(scope=message)
            for name, value in self._headers().items():
                out.setdefault(name, value)
            out["x-request-id"] = self.request_id
        await self._send(message)


class LimitedBody:
    """The request's body, cut off once more than `limit` bytes have been read."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._read = 0
        self.too_large = False

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._read += len(message.get("body", b""))
            if self._read > self._limit:
                self.too_large = True
                raise BodyTooLarge
        return message


def request_id_of(headers: Headers) -> str:
    """The caller's X-Request-Id if it is short printable ASCII, else a new one."""
    given = headers.get("x-request-id", "")
    return given if 0 < len(given) <= 64 and given.isascii() and given.isprintable() else secrets.token_hex(8)


class Edge:
    def __init__(self, app: ASGIApp, settings: Settings, router: Router) -> None:
        self.app = app
        self.settings = settings
        self.router = router  # to tell a route from a 404 or 405, which read no body and need no key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        answer = Answer(send, lambda: self._headers(scope, headers), request_id_of(headers))
        started = time.perf_counter()
        with observability.log_context(request_id=answer.request_id):  # each log line of the request carries it
            try:
                await self._serve(scope, receive, answer, headers)
            finally:
                if self.settings.access_log:
                    path = PERSONAL_NUMBER.sub("***", scope["path"])
                    ms = (time.perf_counter() - started) * 1000
                    access.info("%s %s %s %.0fms", scope["method"], path, answer.status or "-", ms)

    async def _serve(self, scope: Scope, receive: Receive, answer: Answer, headers: Headers) -> None:
        refusal = self._refuse(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, answer)
            return
        body = LimitedBody(receive, self.settings.max_body_bytes)

        async def guarded_send(message: Message) -> None:
            if not body.too_large:  # whatever the app makes of the cut-off body, the answer is the 413
                await answer(message)

        try:
            await self.app(scope, body, guarded_send)
        except Exception as exc:
            if not body.too_large:  # else the 413 below
                await self._failed(exc, scope, receive, answer)
        if body.too_large and not answer.started:
            await self._too_large()(scope, receive, answer)

    async def _failed(self, exc: Exception, scope: Scope, receive: Receive, answer: Answer) -> None:
        """The app raised: logged by where it failed; a 503 if Temporal is away, else a 500,
        unless an answer has started already."""
        request_id = answer.request_id
        if answer.started:
            log.error("request %s failed after answering: %s at %s", request_id, type(exc).__name__, _where(exc))
        elif engine_down(exc):
            log.warning("request %s: Temporal unreachable (%s)", request_id, type(exc).__name__)
            await problem(
                503,
                "engine_unavailable",
                "the workflow engine cannot be reached; retry shortly",
                headers={"Retry-After": ENGINE_RETRY_AFTER},
            )(scope, receive, answer)
        else:
            route = getattr(scope.get("route"), "path", "unmatched")
            log.error(
                "request %s: %s %s failed: %s at %s",
                request_id,
                scope["method"],
                route,
                type(exc).__name__,
                _where(exc),
            )
            await problem(
                500, "internal_error", "something went wrong on our side; it has been logged", request_id=request_id
            )(scope, receive, answer)

    def _too_large(self) -> Response:
        return problem(413, "body_too_large", f"the request body is larger than {self.settings.max_body_bytes} bytes")

    def _headers(self, scope: Scope, headers: Headers) -> dict[str, str]:
        path: str = scope["path"]
        csp = APP_CSP if path.startswith("/app") else DOCS_CSP if path in ("/docs", "/redoc") else API_CSP
        out = {**SECURITY_HEADERS, "content-security-policy": csp}
        forwarded = self.settings.trust_forwarded_proto and headers.get("x-forwarded-proto", "").lower() == "https"
        if scope.get("scheme") == "https" or forwarded:
            out["strict-transport-security"] = HSTS
        return out

    def _refuse(self, scope: Scope, headers: Headers) -> Response | None:
        """An answer given before the body is read: a stranger (401), a body declared too
        large (413), control characters in the path or query (422)."""
        path: str = scope["path"]
        settings = self.settings
        bearer = _bearer(headers)
        if not any(route.matches(scope)[0] is Match.FULL for route in self.router.routes):
            ok = True  # the router answers 404 or 405 (with its Allow) without reading the body
        elif path.startswith("/v1/his/"):
            ok = _same(bearer, settings.his_api_key)
        elif path.startswith("/v1/ops/codec/"):
            ok = True  # its own gate decides, before the body is read: CORS, a UI token (api/routes/codec.py)
        elif path.startswith("/v1/ops/"):
            ok = _same(bearer, settings.ops_api_key)
        elif path.startswith("/v1/patient/") and path not in PUBLIC:
            ok = bool(bearer) and tokens.session_of(settings.data_key, bearer) is not None
        elif path == "/metrics" and (settings.metrics_token or not settings.sandbox):
            ok = _same(bearer, settings.ops_api_key) or _same(bearer, settings.metrics_token)
        else:
            ok = True
        if not ok:
            return problem(
                401,
                "unauthorized",
                "a valid Authorization: Bearer key or token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            declared = int(headers.get("content-length", "0"))
        except ValueError:
            declared = 0
        if declared > settings.max_body_bytes:
            return self._too_large()
        query = unquote_plus(scope.get("query_string", b"").decode("utf-8", "replace"))
        if UNSAFE_CHAR.search(path) or UNSAFE_CHAR.search(query):
            return problem(
                422, "invalid_request", "control characters are not allowed in the path or query", "Invalid request"
            )
        return None


def _bearer(headers: Headers) -> str:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _same(given: str, expected: str) -> bool:
    return bool(given and expected) and hmac.compare_digest(given.encode(), expected.encode())


async def bind_path_ids(request: Request) -> None:
    """A dependency of every route: the visit's and patient's ids in the path join the request's
    log context (ids travel, people do not: a phone or ID number sent as an id is masked), with
    the visit's workflow id."""
    visit_id, patient_id = (request.path_params.get(k) for k in ("visit_id", "patient_id"))
    visit_id = PERSONAL_NUMBER.sub("***", visit_id) if visit_id else None
    observability.bind(
        visit_id=visit_id,
        patient_id=PERSONAL_NUMBER.sub("***", patient_id) if patient_id else None,
        workflow_id=f"visit-{visit_id}" if visit_id else None,
    )


def install(app: Any, settings: Settings) -> None:
    app.add_middleware(Edge, settings=settings, router=app.router)

"""The what-if service over HTTP (FastAPI; the ``serve`` extra): ``python -m jobs.serve cube=PATH``.

Endpoints (docs/architecture.md, "What-if service"): ``POST /whatif``,
``POST /max_size``, ``GET /account/{id}``, ``GET /group/{id}``,
``POST /reprice`` and the schema at ``/openapi.json``.  Every request a
client gets wrong is answered with a 4xx and ``{"error": one line}``:

- 401: ``serve.token`` is set and the ``Authorization: Bearer`` header is missing or wrong;
- 404: an unknown account or group in the path;
- 413: a body larger than ``serve.max_body_bytes`` (checked as it arrives, whatever the headers say);
- 422: malformed JSON, a missing or extra field, an unknown account, group,
  instrument or asset in the body, a NaN, infinite or oversized quantity.

Requests are answered one at a time on the event loop (handlers are
``async`` and never wait): a what-if takes about a millisecond, and a
re-pricing swaps the calculator's state between two requests, never during one.
"""

from __future__ import annotations

import hmac
import json
import math
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from .calculator import MAX_QUANTITY, BadRequest, Calculator, UnknownName

#: Default limit on a request body, bytes.
MAX_BODY_BYTES = 65536
#: Most trades one what-if may carry (``serve.max_trades`` may lower it).
MAX_TRADES = 1000
_ID = Field(min_length=1, max_length=256)
_QUANTITY = dict(strict=True, allow_inf_nan=False, ge=-MAX_QUANTITY, le=MAX_QUANTITY)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Trade(_Strict):
    instrument: str = _ID
    quantity: float = Field(description="signed contracts (+ buy, - sell)", **_QUANTITY)


class _AccountOrGroup(_Strict):
    account: str | None = Field(default=None, min_length=1, max_length=256)
    group: str | None = Field(default=None, min_length=1, max_length=256,
                              description="instead of account: the trades go on the pool's first member")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.account is None) == (self.group is None):
            raise ValueError("give exactly one of account and group")
        return self


class WhatIfRequest(_AccountOrGroup):
    trades: list[Trade] = Field(min_length=1, max_length=MAX_TRADES)


class MaxSizeRequest(_AccountOrGroup):
    instrument: str = _ID
    side: Literal["buy", "sell"]
    lot: float = Field(default=1.0, strict=True, allow_inf_nan=False, gt=0, le=MAX_QUANTITY,
                       description="quantity step of the answer, contracts")


class RepriceRequest(_Strict):
    prices: dict[str, float] = Field(default_factory=dict, max_length=10_000,
                                     description="asset -> intraday price, USD (> 0)")
    vols: dict[str, float] = Field(default_factory=dict, max_length=10_000,
                                   description="asset -> intraday implied vol (0 to 10; cash stays 0)")


class Driver(BaseModel):
    scenario: int
    loss: float


class WhatIfResponse(BaseModel):
    account: str
    group: str
    marks: str
    equity_before: float
    equity_after: float
    es_before: float
    es_after: float
    im_before: float
    im_after: float
    mm_after: float
    margin_call_after: float
    group_equity_after: float
    group_es_before: float
    group_es_after: float
    group_im_before: float
    group_im_after: float
    group_mm_after: float
    group_margin_call_after: float
    marginal_im: float
    drivers: list[Driver]


class MaxSizeResponse(BaseModel):
    account: str
    group: str
    instrument: str
    side: str
    lot: float
    marks: str
    max_quantity: float
    bounded: bool
    already_in_call: bool
    group_im_at_max: float
    group_equity_at_max: float
    group_im_one_more: float | None


class Attribution(BaseModel):
    es: float
    es_contribution: list[dict[str, Any]]
    factor_contribution: list[dict[str, Any]]
    tail_scenarios: list[Driver]


class AccountResponse(BaseModel):
    account: str
    group: str
    marks: str
    night: dict[str, float]
    now: dict[str, float]
    attribution: Attribution


class GroupResponse(BaseModel):
    group: str
    members: list[str]
    marks: str
    night: dict[str, float]
    now: dict[str, float]
    attribution: Attribution


class RepriceResponse(BaseModel):
    marks: str
    prices: dict[str, float]
    vols: dict[str, float]
    n_scenarios: int
    n_options: int
    options_repriced: int
    latency_ms: float


class ErrorResponse(BaseModel):
    error: str


_ERRORS = {code: {"model": ErrorResponse, "description": what} for code, what in (
    (401, "missing or wrong bearer token"), (413, "request body too large"),
    (422, "malformed or invalid request"))}


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413, counted as it arrives."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._reject(send)
        chunks, total, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.limit:
                return await self._reject(send)
            chunks.append(body)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send):
        payload = json.dumps({"error": f"request body larger than {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def _error(status: int, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _where(loc) -> str:
    return ".".join(str(x) for x in loc if x != "body") or "body"


def create_app(calculator: Calculator, token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               max_trades: int = MAX_TRADES) -> FastAPI:
    """The ASGI app over ``calculator`` (wrap it in :class:`BodyLimit` with :func:`asgi`)."""
    bearer = HTTPBearer(auto_error=False)

    async def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)):
        # async: a plain function would be run in a worker thread on every request
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise _Unauthorised()

    app = FastAPI(title="mcmargin what-if margin service", version="1",
                  description="What-if initial margin of a trade, the largest size before a call, and the "
                              "night's figures with their attribution, from the night's scenario cube "
                              "(mc_es: im = max(0, ES_q) x (1 + buffer)).",
                  dependencies=[Depends(authorised)])

    @app.exception_handler(_Unauthorised)
    async def _unauthorised(request: Request, exc: _Unauthorised):
        return _error(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                      **{"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = exc.errors()
        first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
        loc, kind = tuple(first.get("loc", ())), first.get("type")
        if kind == "json_invalid":
            reason = (first.get("ctx") or {}).get("error", "")
            message = f"malformed JSON body at character {loc[-1] if loc else '?'}: {reason}".rstrip(": ")
        elif loc == ("body",) and kind in ("model_attributes_type", "dict_type", "missing"):
            message = "the body must be a JSON object (send Content-Type: application/json)"
        else:
            message = f"{_where(loc)}: {first.get('msg', 'invalid')}"
        if len(problems) > 1:
            message += f" (and {len(problems) - 1} more problem(s))"
        return _error(422, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:         # FastAPI could not read the body at all (e.g. not UTF-8)
            return _error(422, f"malformed JSON body: {exc.detail}")
        return _error(exc.status_code, str(exc.detail), **(exc.headers or {}))

    @app.exception_handler(UnknownName)
    async def _unknown(request: Request, exc: UnknownName):
        return _error(404 if request.method == "GET" else 422, str(exc))

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest):
        return _error(422, str(exc))

    @app.post("/whatif", response_model=WhatIfResponse, responses=_ERRORS,
              summary="margin of the account and its pool after the trades")
    async def whatif(body: WhatIfRequest):
        if len(body.trades) > max_trades:
            raise BadRequest(f"{len(body.trades)} trades: at most {max_trades} per request")
        # The hot path: answered as built (plain floats, ints and strings), without a second validation
        # against WhatIfResponse, which documents it (schemathesis checks every answer against it).
        return JSONResponse(calculator.whatif([(t.instrument, t.quantity) for t in body.trades], body.account,
                                              body.group))

    @app.post("/max_size", response_model=MaxSizeResponse, responses=_ERRORS,
              summary="largest quantity the account can add before its pool's im exceeds its equity")
    async def max_size(body: MaxSizeRequest):
        return calculator.max_size(body.instrument, body.side, body.account, body.group, body.lot)

    not_found = {**_ERRORS, 404: {"model": ErrorResponse, "description": "unknown id"}}

    @app.get("/account/{account_id}", response_model=AccountResponse, responses=not_found,
             summary="the night's figures of an account, its figures now, and the attribution of its ES")
    async def account(account_id: str):
        return calculator.account(account_id)

    @app.get("/group/{group_id}", response_model=GroupResponse, responses=not_found,
             summary="the night's figures of a pool, its figures now, and the attribution of its ES")
    async def group(group_id: str):
        return calculator.group(group_id)

    @app.post("/reprice", response_model=RepriceResponse, responses=_ERRORS,
              summary="re-centre on intraday prices and vols (revalue every instrument on the stored shocks)")
    async def reprice(body: RepriceRequest):
        for name, values in (("prices", body.prices), ("vols", body.vols)):
            for asset, x in values.items():
                if not math.isfinite(x):
                    raise BadRequest(f"{name}[{asset}] must be a finite number")
        return calculator.reprice(body.prices, body.vols)

    return app


class _Unauthorised(Exception):
    pass


def asgi(calculator: Calculator, token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
         max_trades: int = MAX_TRADES):
    """The service as one ASGI callable: :func:`create_app` behind :class:`BodyLimit`."""
    return BodyLimit(create_app(calculator, token, max_body_bytes, max_trades), max_body_bytes)

"""The HTTP prediction service (FastAPI): top-k tails / heads by names, triple scores, health and metadata.

Endpoints (an OpenAPI description is served at ``/openapi.json``, interactive docs at ``/docs``)::

    POST /predict/tail  {"head": str, "relation": str, "k": int = 10, "exclude_known": bool = false}
    POST /predict/head  {"tail": str, "relation": str, "k": int = 10, "exclude_known": bool = false}
    POST /predict/batch {"queries": [{"head" or "tail": str, "relation": str, "k": int, "exclude_known": bool}, ...]}
    POST /score         {"triples": [{"head": str, "relation": str, "tail": str} or [head, relation, tail], ...]}
    GET  /entities?prefix=..&limit=20     GET /relations?prefix=..&limit=20   (search by label or name)
    GET  /health        GET /metadata        GET /metrics (Prometheus text format)

Entities and relations are given by label or readable name (case-insensitive). Bad input is answered with a 4xx
and ``{"detail": message}``: 400 malformed JSON, 413 body over the limit, 422 unknown names (with close matches),
k out of range, missing / extra / mistyped fields, too many triples. Queries are batched across concurrent
requests (:mod:`kgdistill.serve.batching`); a query that arrives while nothing else is waiting is scored at once.

The two prediction routes are the hot path. Well-formed requests to them are answered by
:class:`~kgdistill.serve.hot.HotRoutes`, an ASGI middleware in front of FastAPI's routing: it validates the body with
the same pydantic models and writes the same JSON, without FastAPI's per-request machinery (which costs more than
scoring a small model). Anything it does not accept (another content type, invalid JSON or fields, unknown names)
goes on to the FastAPI routes, which answer it exactly as before; the routes also define the OpenAPI description.
"""

# no "from __future__ import annotations": FastAPI resolves the request models defined inside create_app
import asyncio
import json
import logging
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from kgdistill.errors import KGDistillError
from kgdistill.artifact import Artifact, load_artifact
from kgdistill.predict import UnknownEntityError
from kgdistill.serve.batching import BatchScorer, TopK
from kgdistill.serve.hot import HotRoutes
from kgdistill.serve.limits import BodySizeLimit

logger = logging.getLogger(__name__)

#: where /docs loads Swagger UI from: this service itself (the ``swagger-ui-bundle`` package), so it works offline
DOCS_ASSETS = "/docs-assets"


def add_local_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI's files served by the service itself from the packaged copy (``swagger-ui-bundle``,
    in the serve extra), not from a CDN: the page works without internet access. Without the package, FastAPI's
    default page (CDN) is served."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    try:
        from swagger_ui_bundle import swagger_ui_path
        from starlette.staticfiles import StaticFiles
    except ImportError:
        logger.warning("swagger-ui-bundle is not installed: /docs loads Swagger UI from a CDN")
        assets = None
    else:
        app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
        assets = DOCS_ASSETS

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if assets is None:
            return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - docs")
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - docs",
                                   swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{assets}/swagger-ui.css",
                                   swagger_favicon_url=f"{assets}/favicon-32x32.png")

NAME = Field(min_length=1, max_length=512)
#: the request field that hides known answers: exclude_known, as the CLI's --exclude-known; filter_known (its name
#: before 2026-12-02) is still read
KNOWN_ALIASES = AliasChoices("exclude_known", "filter_known")


class Prediction(BaseModel):
    rank: int
    entity: str = Field(description="entity label (the dataset's id)")
    name: str = Field(description="readable name")
    score: float | None = Field(description="model score (null if the model returned a non-finite number)")
    known: bool = Field(description="the triple is in the known triples (train ∪ valid ∪ test)")


class PredictResponse(BaseModel):
    query: dict[str, Any]
    predictions: list[Prediction]


class ScoreResponse(BaseModel):
    scores: list[float | None]


class Issue(BaseModel):
    loc: list[str]
    msg: str
    type: str | None = None


class ErrorResponse(BaseModel):
    detail: str = Field(description="what is wrong with the request, in one message")
    errors: list[Issue] | None = Field(None, description="each invalid field (invalid requests only)")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "malformed JSON body"},
    413: {"model": ErrorResponse, "description": "request body over the size limit"},
    422: {"model": ErrorResponse, "description": "unknown entity / relation (with close matches), k out of range, "
                                                 "missing, extra or mistyped fields"},
}


class Triple(BaseModel):
    model_config = ConfigDict(extra="forbid")
    head: str = NAME
    relation: str = NAME
    tail: str = NAME


class HTTPError(Exception):
    """An error answered with ``status`` and ``{"detail": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _json(content: Any, status: int = 200) -> Response:
    """A JSON response; non-finite floats (a model returning NaN) become null rather than invalid JSON."""
    try:
        body = json.dumps(content, allow_nan=False, separators=(",", ":"))
    except ValueError:
        body = json.dumps(_finite(content), separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json")


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _number(x: float) -> str:
    """``x`` as :func:`json.dumps` writes it (``repr``); null when not finite."""
    return float.__repr__(x) if math.isfinite(x) else "null"


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": message, **extra})


def _describe(errors: list[dict[str, Any]]) -> tuple[int, str, list[dict[str, Any]]]:
    """Pydantic / FastAPI validation errors → (status, one readable message, JSON-safe error list)."""
    clean = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")}
             for e in errors]
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "invalid JSON")
            pos = e.get("loc", ("body", "?"))[-1]
            return 400, f"malformed JSON body: {reason} (at character {pos})", clean
    parts = []
    for e in clean:
        where = ".".join(x for x in e["loc"] if x != "body") or "body"
        parts.append(f"{where}: {e['msg']}")
    return 422, "invalid request: " + "; ".join(parts), clean


class PredictionWriter:
    """Writes the JSON of a prediction answer, byte for byte what ``json.dumps(content, separators=(",", ":"))``
    gives, from per-entity fragments encoded once (the labels and names are the bulk of an answer)."""

    def __init__(self, art: Artifact) -> None:
        self.entities, self.names, self.relations = art.entities, art.entity_names, art.relations
        self._fragments: dict[int, str] = {}

    def fragment(self, e: int) -> str:
        found = self._fragments.get(e)
        if found is None:
            found = self._fragments[e] = (f'"entity":{json.dumps(self.entities[e])},'
                                          f'"name":{json.dumps(self.names[e])}')
        return found

    def __call__(self, side: str, anchor: int, relation: int, k: int, exclude_known: bool, top: TopK) -> bytes:
        key = "head" if side == "tail" else "tail"
        query = (f'{{"{key}":{json.dumps(self.entities[anchor])},"relation":{json.dumps(self.relations[relation])},'
                 f'"side":"{side}","k":{k},"exclude_known":{"true" if exclude_known else "false"}}}')
        items = ",".join(f'{{"rank":{i},{self.fragment(e)},"score":{_number(s)},"known":{"true" if kn else "false"}}}'
                         for i, (e, s, kn) in enumerate(zip(top.ids, top.scores, top.known), 1))
        return f'{{"query":{query},"predictions":[{items}]}}'.encode()


def create_app(artifact: Artifact | str | Path, *, max_batch: int = 64, max_wait_ms: float = 0.0,
               max_k: int = 1000, max_triples: int = 1000, max_body_bytes: int = 1 << 20,
               inline_when_idle: bool = True, hot_path: bool = True) -> FastAPI:
    """Build the service for an artifact (a loaded :class:`Artifact` or a path to one).

    Args:
        max_batch, max_wait_ms: dynamic batching (see :class:`~kgdistill.serve.batching.BatchScorer`).
        max_k: largest k accepted (also capped at the number of entities).
        max_triples: most triples in one ``/score`` request.
        max_body_bytes: larger request bodies are refused with 413.
        inline_when_idle: score a prediction query on the event loop when no other one is waiting or being scored
            (no hand-over to the batching thread); under concurrency queries are always batched.
        hot_path: answer well-formed prediction requests in :class:`~kgdistill.serve.hot.HotRoutes` (same
            answers as the FastAPI routes, which get everything else).
    """
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    art.model.eval()
    _ = art.filter_index, art.find_entity(""), art.find_relation("")  # build the lookup indexes before serving
    k_limit = max(1, min(max_k, art.num_entities))
    scorer = BatchScorer(art, max_batch=max_batch, max_wait_ms=max_wait_ms)
    from kgdistill.serve.metrics import MetricsMiddleware, ServiceMetrics

    metrics = ServiceMetrics(["/predict/tail", "/predict/head", "/predict/batch", "/score", "/entities", "/relations",
                              "/health", "/metadata", "/metrics", "/docs", "/openapi.json"])
    scorer.stats.observer = metrics.batch_sizes.observe
    write = PredictionWriter(art)

    # the fields every prediction query shares (one definition for the tail, head and batch queries)
    RelationName = Annotated[str, Field(min_length=1, max_length=512, description="relation: label or text")]
    AnswerCount = Annotated[int, Field(ge=1, le=k_limit, strict=True, description=f"number of answers, 1 … {k_limit}")]
    ExcludeKnown = Annotated[bool, Field(strict=True, validation_alias=KNOWN_ALIASES,
                                         description="leave out answers that are known triples (also read as "
                                                     "filter_known, its former name)")]

    class TailQuery(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"head": art.entities[0], "relation": art.relations[0], "k": 5, "exclude_known": False}]})
        head: str = Field(min_length=1, max_length=512, description="head entity: label or name")
        relation: RelationName
        k: AnswerCount = 10
        exclude_known: ExcludeKnown = False

    class HeadQuery(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"tail": art.entities[0], "relation": art.relations[0], "k": 5}]})
        tail: str = Field(min_length=1, max_length=512, description="tail entity: label or name")
        relation: RelationName
        k: AnswerCount = 10
        exclude_known: ExcludeKnown = False

    class BatchQuery(BaseModel):
        model_config = ConfigDict(extra="forbid")
        head: str | None = Field(None, min_length=1, max_length=512,
                                 description="head entity (give head for top-k tails, or tail for top-k heads)")
        tail: str | None = Field(None, min_length=1, max_length=512, description="tail entity")
        relation: RelationName
        k: AnswerCount = 10
        exclude_known: ExcludeKnown = False

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid",
                                  json_schema_extra={"examples": [{"queries": [
                                      {"head": art.entities[0], "relation": art.relations[0], "k": 3},
                                      {"tail": art.entities[-1], "relation": art.relations[0], "k": 3}]}]})
        queries: list[BatchQuery] = Field(min_length=1, max_length=max_triples,
                                          description=f"1 … {max_triples} queries, each with a head or a tail")

    class ScoreRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"triples": [
            {"head": art.entities[0], "relation": art.relations[0], "tail": art.entities[-1]},
            [art.entities[-1], art.relations[0], art.entities[0]]]}]})
        triples: list[Triple | Annotated[list[Annotated[str, NAME]], Field(min_length=3, max_length=3)]] = Field(
            min_length=1, max_length=max_triples,
            description=f"1 … {max_triples} triples of labels or names: objects or [head, relation, tail] arrays")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        scorer.close()

    summary = art.summary()
    app = FastAPI(title="kgdistill prediction service", lifespan=lifespan, docs_url=None,
                  description=f"Link prediction with a {summary['model']} model "
                              f"({summary['interaction'] or ''} dim {summary['dim']}, {summary['dtype']}) over "
                              f"{art.num_entities:,} entities and {art.num_relations:,} relations.")
    app.state.artifact, app.state.scorer = art, scorer

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, errors = _describe(list(exc.errors()))
        if [e["loc"] for e in errors] == [["body"]] and errors[0]["type"] == "model_attributes_type":
            content_type = request.headers.get("content-type", "")
            json_type = content_type.lower().split(";")[0].strip() == "application/json"
            message += ("; the body must be a JSON object ({...} with the fields of the query)" if json_type else
                        f"; the body must be a JSON object sent with Content-Type: application/json (got "
                        f"{content_type or 'no Content-Type'})")
        return _error(status, message, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def on_starlette_error(request: Request, exc: StarletteHTTPException) -> Response:
        cause = exc.__cause__
        if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):  # FastAPI: "error parsing the body"
            raw, where = bytes(cause.object), ""
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                where = f" (byte 0x{raw[err.start]:02x} at position {err.start})"
            return _error(400, f"malformed JSON body: not valid UTF-8{where}; send JSON encoded as UTF-8")
        return await http_exception_handler(request, exc)  # 404, 405 (with Allow) ... as FastAPI answers them

    @app.exception_handler(HTTPError)
    async def on_http_error(request: Request, exc: HTTPError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:  # the request fails, not the server
        reference = secrets.token_hex(4)  # the body tells nothing of the internals; the log has the traceback
        logger.error("internal error %s on %s %s", reference, request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error (reference {reference}; the details are in the server log)")

    add_local_docs(app)

    async def resolve(kind: str, name: str) -> int:
        found = art.find_entity(name) if kind == "entity" else art.find_relation(name)
        if found is not None:
            return found
        try:  # close-match suggestions scan the vocabulary: off the event loop
            return await run_in_threadpool(art.entity_id if kind == "entity" else art.relation_id, name)
        except UnknownEntityError as err:
            raise HTTPError(422, str(err)) from None
        except KGDistillError as err:
            raise HTTPError(400, str(err)) from None

    waiting = 0  # prediction queries between arrival and answer

    async def top_k(side: str, anchor: int, rel: int, k: int, exclude_known: bool) -> TopK:
        nonlocal waiting
        waiting += 1
        try:
            if inline_when_idle:
                await asyncio.sleep(0)  # requests that arrived together all get here first, and are batched
                if waiting == 1 and scorer.idle:
                    return scorer.predict_now(side, anchor, rel, k, exclude_known)
            return await asyncio.wrap_future(scorer.predict(side, anchor, rel, k, exclude_known))
        finally:
            waiting -= 1

    async def answer(side: str, anchor: int, rel: int, k: int, exclude_known: bool) -> bytes:
        top = await top_k(side, anchor, rel, k, exclude_known)
        return write(side, anchor, rel, k, exclude_known, top)

    async def run_query(side: str, anchor_name: str, relation_name: str, k: int, exclude_known: bool) -> Response:
        anchor, rel = await resolve("entity", anchor_name), await resolve("relation", relation_name)
        return Response(await answer(side, anchor, rel, k, exclude_known), media_type="application/json")

    # The handlers return ready JSON (the response models document the schema in OpenAPI; re-validating every
    # answer through them would cost more than scoring a small model).
    @app.post("/predict/tail", response_model=PredictResponse, responses=ERRORS,
              summary="top-k tails of (head, relation, ?)")
    async def predict_tail(q: TailQuery) -> Response:
        return await run_query("tail", q.head, q.relation, q.k, q.exclude_known)

    @app.post("/predict/head", response_model=PredictResponse, responses=ERRORS,
              summary="top-k heads of (?, relation, tail)")
    async def predict_head(q: HeadQuery) -> Response:
        return await run_query("head", q.tail, q.relation, q.k, q.exclude_known)

    @app.post("/predict/batch", responses=ERRORS, summary="several top-k queries in one request")
    async def predict_batch(req: BatchRequest) -> Response:
        """Each query gives ``head`` (top-k tails) or ``tail`` (top-k heads), never both; the answers come in the
        order of the queries, each as ``/predict/tail`` or ``/predict/head`` would answer it (queries of one
        request are scored together in the batches of the service)."""
        for i, q in enumerate(req.queries):
            if (q.head is None) == (q.tail is None):
                raise HTTPError(422, f"queries[{i}]: give exactly one of head (for tails) or tail (for heads)")
        jobs = []
        for q in req.queries:
            side, anchor_name = ("tail", q.head) if q.head is not None else ("head", q.tail)
            anchor, rel = await resolve("entity", anchor_name), await resolve("relation", q.relation)
            jobs.append(answer(side, anchor, rel, q.k, q.exclude_known))
        parts = await asyncio.gather(*jobs)
        return Response(b'{"predictions":[' + b",".join(parts) + b"]}", media_type="application/json")

    @app.post("/score", response_model=ScoreResponse, responses=ERRORS,
              summary="scores of triples (higher = more plausible)")
    async def score(req: ScoreRequest) -> Response:
        named = [(t.head, t.relation, t.tail) if isinstance(t, Triple) else tuple(t) for t in req.triples]
        ids = [[await resolve("entity", h), await resolve("relation", r), await resolve("entity", t)]
               for h, r, t in named]
        scores = await asyncio.wrap_future(scorer.score(torch.tensor(ids, dtype=torch.long)))
        return _json({"scores": scores})

    def search(labels: list[str], names: list[str], prefix: str, limit: int) -> dict[str, Any]:
        want = prefix.casefold()
        found = [{"id": i, "label": label, "name": name} for i, (label, name) in enumerate(zip(labels, names))
                 if label.casefold().startswith(want) or name.casefold().startswith(want)]
        return {"prefix": prefix, "total": len(found), "matches": found[:limit]}

    @app.get("/entities", responses=ERRORS, summary="entities whose label or name starts with a prefix")
    async def entities(prefix: str = Query("", max_length=512, description="case-insensitive; empty: all"),
                       limit: int = Query(20, ge=1, le=1000, description="most matches returned, 1 … 1000")
                       ) -> dict[str, Any]:
        return await run_in_threadpool(search, art.entities, art.entity_names, prefix, limit)

    @app.get("/relations", responses=ERRORS, summary="relations whose label or text starts with a prefix")
    async def relations(prefix: str = Query("", max_length=512, description="case-insensitive; empty: all"),
                        limit: int = Query(20, ge=1, le=1000, description="most matches returned, 1 … 1000")
                        ) -> dict[str, Any]:
        return await run_in_threadpool(search, art.relations, art.relation_names, prefix, limit)

    @app.get("/metrics", summary="Prometheus metrics: requests by route and status, latency, batch sizes",
             response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/health", summary="liveness")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "entities": art.num_entities, "relations": art.num_relations}

    @app.get("/metadata", summary="model, dimensions, parameters, metrics, limits")
    async def metadata() -> dict[str, Any]:
        return {**summary, "limits": {"max_k": k_limit, "max_triples": max_triples, "max_body_bytes": max_body_bytes,
                                      "max_batch": max_batch},
                "batching": scorer.stats.as_dict()}

    # The hot path: a well-formed query whose names are known is answered here; anything else goes on to the routes.
    def hot(side: str, model: type[BaseModel], anchor_field: str) -> Any:
        async def handle(fields: Any) -> bytes | None:
            try:
                q = model.model_validate(fields)  # the validation FastAPI does (python mode, on json.loads)
            except ValidationError:
                return None
            fields_ = q.model_dump()
            anchor, rel = art.find_entity(fields_[anchor_field]), art.find_relation(fields_["relation"])
            if anchor is None or rel is None:  # the route answers with close matches
                return None
            return await answer(side, anchor, rel, fields_["k"], fields_["exclude_known"])
        return handle

    if hot_path:  # added first: it sits inside the size limit, which reads (and bounds) the body
        app.add_middleware(HotRoutes, routes={"/predict/tail": hot("tail", TailQuery, "head"),
                                              "/predict/head": hot("head", HeadQuery, "tail")})
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: every request, hot path or route
    return app

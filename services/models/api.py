"""Model serving API: ``POST /v1/models/{name}/predict`` (authenticated, tenant-scoped)."""

from __future__ import annotations

import threading
import time
from typing import Annotated, Union

from fastapi import Depends, FastAPI, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, StrictInt, StrictStr

from services.common.app import ServiceContext, create_service_app
from services.common.auth import Principal
from services.common.compat import serialize_ast_parsing
from services.common.problems import Problem
from services.models.scorer import ModelScorer, ScoringError

EntityId = Union[StrictInt, Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]]


class PredictIn(BaseModel):
    entities: list[EntityId] = Field(min_length=1, max_length=100, description="instrument symbols or account ids")


class PredictionOut(BaseModel):
    entity: StrictInt | StrictStr
    score: float
    prediction: int
    variant: str
    model_version: str
    features_as_of: str | None


class PredictOut(BaseModel):
    model: str
    predictions: list[PredictionOut]


class ModelOut(BaseModel):
    name: str
    champion: str | None
    challenger: str | None
    challenger_share: float


def create_models_app(ctx: ServiceContext, scorer: ModelScorer) -> FastAPI:
    # models load on a warm-up thread and on request threads at once, and numpy parses each array's header into an
    # AST: on a Python with gh-106905 two threads doing that can raise SystemError (services.common.compat)
    serialize_ast_parsing()
    app = create_service_app(ctx, "platformQ model serving",
                             "Real-time scores from Feast online features and the MLflow champion (A/B with the challenger).")
    can_predict = ctx.require("models:predict")

    def problem(exc: ScoringError) -> Problem:
        titles = {404: "Not Found", 409: "Conflict", 422: "Unprocessable Content", 503: "Service Unavailable"}
        return Problem(exc.status, titles.get(exc.status, "Error"), str(exc), exc.kind)

    @app.get("/v1/models", response_model=list[ModelOut], tags=["models"])
    def models(principal: Principal = Depends(can_predict)):
        try:
            return [ModelOut(name=name, champion=scorer._version(name, "champion"),
                             challenger=scorer._version(name, "challenger"),
                             challenger_share=scorer.challenger_share.get(name, 0.0)) for name in sorted(scorer.specs)]
        except ScoringError as exc:
            raise problem(exc) from None

    # async on purpose: scoring one request is ~1 ms of CPU (features from the online store, one model
    # call), cheaper inline than a thread-pool hop; run more workers for more throughput. The registry lookup
    # (every alias TTL) and a model load can wait on the network for seconds: they run in the thread pool,
    # so an MLflow outage or a new version's load never holds up the other requests.
    @app.post("/v1/models/{name}/predict", response_model=PredictOut, tags=["models"])
    async def predict(body: PredictIn, name: Annotated[str, Path(pattern=r"^[a-z0-9_]{1,64}$")],
                principal: Principal = Depends(can_predict)):
        try:
            resolved = scorer.resolved(name) or await run_in_threadpool(scorer.resolve, name)
            results = scorer.score(*resolved, list(body.entities), principal.tenant)
        except ScoringError as exc:
            raise problem(exc) from None
        return PredictOut(model=name, predictions=[PredictionOut(**r) for r in results])

    def warm_up() -> None:
        started = time.perf_counter()
        try:
            loaded = scorer.warm()
        except Exception as exc:  # the registry or the online store is down: requests will say so themselves
            ctx.logger.warning(f"warm-up failed: {exc!r}", extra={"service": ctx.name})
            return
        ctx.logger.info(f"warm: loaded {loaded or 'no champions yet'}",
                        extra={"service": ctx.name, "duration_ms": round(1000 * (time.perf_counter() - started), 1)})

    # load the served models in the background as the service starts, so the first request does not wait
    # for the imports and the loads; requests arriving meanwhile do that work themselves
    app.router.on_startup.append(lambda: threading.Thread(target=warm_up, name="models-warm-up", daemon=True).start())
    return app

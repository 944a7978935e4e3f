"""Scores entities with a registered model's current alias, reading features from Feast's online store.

No Dagster here. The registry is asked which version holds ``champion`` (and ``challenger``)
at most every ``alias_ttl_s`` seconds, so moving an alias takes effect without a restart;
loaded versions are cached by (model, version). A/B: a configured share of entities is
assigned to the challenger by a stable hash of (model, entity), so an entity always sees the
same variant; every assignment is recorded (JSON lines) with the version that answered.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger("platformq.models")


class ScoringError(Exception):
    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind = status, kind


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    service: str  # Feast feature service
    entity_key: str  # join key, e.g. instrument / account_id
    features: tuple[str, ...]
    tenant_scoped: bool  # rows carry tenant_id: callers only see their own tenant's entities
    warm_up_entity: str | int = "platformq-warm-up"  # an entity of the join key's type, read once at start-up
    join_key_type: str = "STRING"  # Feast value type of the join key (INT64 keys take integers only)


def default_specs() -> dict[str, ModelSpec]:
    """One spec per feature service in the Feast repo: join key and its type, features, tenant scoping."""
    from features.repo import ENTITY_KEYS, JOIN_KEY_TYPES, SERVICES, feature_columns, tenant_scoped

    def warm_up_entity(key: str) -> str | int:
        return -1 if JOIN_KEY_TYPES[key].startswith("INT") else "platformq-warm-up"

    return {name: ModelSpec(name, SERVICES[name], ENTITY_KEYS[name], tuple(feature_columns(name)),
                            tenant_scoped=tenant_scoped(name), warm_up_entity=warm_up_entity(ENTITY_KEYS[name]),
                            join_key_type=JOIN_KEY_TYPES[ENTITY_KEYS[name]])
            for name in SERVICES}


INT64_RANGE = (-(2**63), 2**63 - 1)


def join_key_value(spec: ModelSpec, entity):
    """The entity as the join key's type, or a 422: Feast raises (a 500) on an id it cannot convert."""
    if not spec.join_key_type.startswith("INT"):
        return str(entity)
    text = str(entity)
    value = int(text) if not isinstance(entity, bool) and re.fullmatch(r"-?[0-9]+", text) else None
    if value is None or not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
        raise ScoringError(422, "invalid-entity", f"{spec.entity_key} must be a 64-bit integer, got {entity!r}")
    return value


def assign_variant(model: str, entity: str, challenger_share: float) -> str:
    """Stable split: the same (model, entity) always lands on the same side."""
    digest = hashlib.sha256(f"{model}:{entity}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "challenger" if position < challenger_share else "champion"


def _store_outage(exc: BaseException) -> bool:
    """Whether an online read failed because the store is unreachable or failing (a connection, a timeout, Redis's
    own errors, SQLite busy or unreadable), not because of the request or the code."""
    import sqlite3

    return isinstance(exc, (OSError, TimeoutError, ConnectionError, sqlite3.OperationalError)) or \
        type(exc).__module__.split(".")[0] == "redis"


class ModelScorer:
    def __init__(self, registry, online_features: Callable[[str, list[dict]], dict], specs: dict[str, ModelSpec],
                 challenger_share: dict[str, float] | None = None, alias_ttl_s: float = 2.0,
                 assignments_path: str | None = None, clock=time.monotonic):
        self.registry = registry  # resources.mlflow.MlflowResource (or anything with version_for + load)
        self.online_features = online_features
        self.specs = specs
        unknown = sorted(set(challenger_share or {}) - set(specs))
        if unknown:  # a misspelt name (price-direction) sent no traffic to any challenger, silently
            raise ValueError(f"PLATFORMQ_AB_CHALLENGER_SHARE names models that are not served: {unknown}; the "
                             f"served models are {sorted(specs)}")
        self.challenger_share = challenger_share or {}
        self.alias_ttl_s = alias_ttl_s
        self.assignments_path = Path(assignments_path) if assignments_path else None
        self.clock = clock
        self._aliases: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._models: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str], int] = {}
        # threadpoolctl controls only the native thread pools loaded when a controller is made, and a model's
        # OpenMP runtime is loaded with the model: made after a load, never before (see _one_thread)
        self._threads = None
        self._assignments = None
        # (model, version) -> when its load last failed: a challenger that does not load is passed over (the
        # champion answers) and tried again after ``load_retry_s``, not on every request
        self._failed: dict[tuple[str, str], float] = {}
        self.load_retry_s = 30.0

    def _fresh(self, model: str, alias: str, now: float) -> tuple[float, str | None] | None:
        """The alias's cached (time, version) while younger than ``alias_ttl_s``, else None."""
        cached = self._aliases.get((model, alias))
        return cached if cached and now - cached[0] < self.alias_ttl_s else None

    def _version(self, model: str, alias: str) -> str | None:
        now = self.clock()
        fresh = self._fresh(model, alias, now)
        if fresh:
            return fresh[1]
        cached = self._aliases.get((model, alias))
        try:
            found = self.registry.version_for(model, alias)
        except Exception as exc:  # the registry is unreachable: keep serving what it last said, else 503
            if cached:  # and ask again only after another TTL: an outage must not cost every request a timeout
                self._aliases[(model, alias)] = (self.clock(), cached[1])
                return cached[1]
            raise ScoringError(503, "registry-unavailable",
                               f"the model registry is unavailable ({type(exc).__name__}); try again later") from exc
        version = str(found.version) if found is not None else None
        self._aliases[(model, alias)] = (now, version)
        return version

    def _load(self, model: str, version: str):
        key = (model, version)
        if key not in self._models:
            from mlflow import sklearn as mlflow_sklearn

            self.registry._mlflow()
            try:
                self._models[key] = mlflow_sklearn.load_model(f"models:/{model}/{version}")
            except Exception as exc:  # the registry or its artifact store is unreachable
                raise ScoringError(503, "model-unavailable", f"{model} version {version} could not be loaded "
                                   f"({type(exc).__name__}); try again later") from exc
            self._threads = None  # the load may have brought a thread pool the controller has not seen
        return self._models[key]

    def _one_thread(self):
        """Limit OpenMP to one thread for a one-row prediction (the controller sees every loaded model's runtime)."""
        threads = self._threads  # read once: the warm-up thread may reset it after a load meanwhile
        if threads is None:
            from threadpoolctl import ThreadpoolController

            threads = self._threads = ThreadpoolController()
        return threads.limit(limits=1, user_api="openmp")

    def warm(self) -> dict[str, list[str]]:
        """What each model's first request would otherwise wait for (seconds: MLflow, Feast and the model's
        libraries are imported on first use): look up its champion and challenger, load the versions that answer
        (the challenger when a share goes to it) and read the online store once. Returns the versions loaded per model; a model without a champion is skipped."""
        loaded = {}
        for name in self.specs:
            try:
                spec, champion, challenger = self.resolve(name)
            except ScoringError as exc:
                if exc.kind == "no-champion":
                    continue
                raise
            self.online_features(spec.service, [{spec.entity_key: spec.warm_up_entity}])
            loaded[name] = list(dict.fromkeys(v for v in (champion, challenger) if v is not None))
        return loaded

    def resolve(self, model: str) -> tuple[ModelSpec, str, str | None]:
        """The model's spec and the versions answering for it (champion, challenger), loaded: a prediction's
        registry and model-store I/O (the registry asked at most every ``alias_ttl_s`` seconds)."""
        spec = self.specs.get(model)
        if spec is None:
            raise ScoringError(404, "unknown-model", f"no model named {model!r}; models: {', '.join(sorted(self.specs))}")
        champion = self._version(model, "champion")
        if champion is None:
            raise ScoringError(409, "no-champion", f"{model} has no champion yet (promote a version first)")
        challenger = self._version(model, "challenger")
        self._load(model, champion)
        self._evict(model, {champion, challenger})
        served = self._served_challenger(model, champion, challenger, self.clock())
        if served is not None and (model, served) not in self._models:
            try:
                self._load(model, served)
            except ScoringError as exc:  # the champion answers meanwhile: a challenger is never worth an outage
                self._failed[(model, served)] = self.clock()
                log.warning("%s: challenger version %s is passed over, the champion (version %s) answers every "
                            "request; loading it again in %.0f s (%s)", model, served, champion, self.load_retry_s,
                            exc)
                served = None
        return spec, champion, served

    def _served_challenger(self, model: str, champion: str, challenger: str | None, now: float) -> str | None:
        """The challenger that takes a share of the requests: none when there is none, it is the champion, no
        share goes to it, or its load failed less than ``load_retry_s`` ago."""
        if challenger is None or challenger == champion or self.challenger_share.get(model, 0.0) <= 0:
            return None
        failed = self._failed.get((model, challenger))
        if failed is not None and now - failed < self.load_retry_s:
            return None
        return challenger

    def _evict(self, model: str, live: set[str | None]) -> None:
        """Drop the model's loaded versions that no alias holds any more (one more a week for the process's life);
        an alias moved back loads its version again."""
        for key in [k for k in list(self._models) if k[0] == model and k[1] not in live]:
            self._models.pop(key, None)

    def resolved(self, model: str) -> tuple[ModelSpec, str, str | None] | None:
        """What :meth:`resolve` would return when that needs no I/O now (both aliases fresh, their versions
        loaded), else None: the API calls resolve off its event loop only when it is due."""
        now = self.clock()
        fresh = [self._fresh(model, alias, now) for alias in ("champion", "challenger")]
        if None in fresh:
            return None
        champion, challenger = (f[1] for f in fresh)
        if model not in self.specs or champion is None or (model, champion) not in self._models:
            return None
        served = self._served_challenger(model, champion, challenger, now)
        if served is not None and (model, served) not in self._models:
            return None
        return self.specs[model], champion, served

    def predict(self, model: str, entities: list, tenant: str) -> list[dict]:
        return self.score(*self.resolve(model), entities, tenant)

    def score(self, spec: ModelSpec, champion: str, challenger: str | None, entities: list, tenant: str) -> list[dict]:
        """Scores with resolved versions: Feast's online store and the model, no registry call."""
        model = spec.name
        rows = [{spec.entity_key: join_key_value(spec, entity)} for entity in entities]
        try:
            online = self.online_features(spec.service, rows)
        except Exception as exc:
            if not _store_outage(exc):  # a bug or a misconfiguration is a 500, not a 503 clients resend on
                raise
            # the online store (Redis, SQLite) is down or failing: a dependency, like the registry
            log.warning("%s: the online feature store failed (%r): answering 503", model, exc)
            raise ScoringError(503, "feature-store-unavailable", f"the online feature store is unavailable "
                               f"({type(exc).__name__}); try again later") from exc
        out = []
        for i, entity in enumerate(entities):
            if spec.tenant_scoped and online.get("tenant_id", [None] * len(entities))[i] != tenant:
                # another tenant's entity looks exactly like an unknown one: no existence leak
                raise ScoringError(404, "unknown-entity", f"no online features for {spec.entity_key} {entity}")
            values = [online.get(f, [None] * len(entities))[i] for f in spec.features]
            as_of = online.get("as_of_epoch", [None] * len(entities))[i]
            if as_of is None:  # nothing stored for it within the view's TTL (on-demand features don't count)
                raise ScoringError(404, "unknown-entity", f"no online features for {spec.entity_key} {entity}")
            share = self.challenger_share.get(model, 0.0)
            # by the join key's value, not its spelling: "0196" and 196 are one account, on one side
            key = str(rows[i][spec.entity_key])
            variant = assign_variant(model, key, share) if challenger and challenger != champion else "champion"
            version = challenger if variant == "challenger" else champion
            estimator = self._models.get((model, version))
            if estimator is None:  # dropped meanwhile (its alias moved): load it again
                estimator = self._load(model, version)
            row = np.array([[0.0 if v is None or v != v else float(v) for v in values]])
            # one row: OpenMP worker threads cost more than they save (p99 4.6 ms -> 0.5 ms on 2 cores)
            with self._one_thread():
                score = float(estimator.predict_proba(row)[0, 1])
            out.append({"entity": entity, "score": score, "prediction": int(score >= 0.5), "variant": variant,
                        "model_version": version,
                        "features_as_of": dt.datetime.fromtimestamp(as_of, dt.timezone.utc).isoformat() if as_of else None})
        self._record(model, tenant, out, [row[spec.entity_key] for row in rows])
        return out

    def _record(self, model: str, tenant: str, results: list[dict], keys: list) -> None:
        """Counts each result's variant and writes one assignment line per result (``keys``: the join key values)."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        with self._lock:
            for r in results:
                self.counts[(model, r["variant"])] = self.counts.get((model, r["variant"]), 0) + 1
            if self.assignments_path:
                if self._assignments is None:  # kept open: one open() per request costs more than the write
                    self._assignments = self.assignments_path.open("a", buffering=1)  # line-buffered
                for r, key in zip(results, keys):
                    self._assignments.write(json.dumps({
                        "ts": now, "model": model, "tenant": tenant, "entity": str(key),
                        "variant": r["variant"],
                        "model_version": r["model_version"], "score": r["score"]}) + "\n")

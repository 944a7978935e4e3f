"""MLflow as a Dagster resource: tracking, the model registry and alias-based promotion.

Every model the platform trains (centralised, federated, spiking) goes through the same
life cycle, written down here once:

* a new version is registered with the alias ``challenger`` and the tag ``platformq.stage=dev``;
* an evaluation passes its gate -> ``staging`` (alias ``staging``);
* promotion makes it ``champion`` (stage ``production``; the ``challenger`` and ``staging`` aliases leave it);
  the champion it replaces keeps the alias ``previous-champion`` (stage ``archived``) so a rollback is one call;
* every move records who/why in version tags and in the model's ``platformq.history`` tag.

``mlflow`` is imported inside the methods (3 s import; Feast's MLflow plugin adds more).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any, Iterator

from dagster import ConfigurableResource

CHAMPION = "champion"
CHALLENGER = "challenger"
STAGING = "staging"
PREVIOUS_CHAMPION = "previous-champion"
STAGE_TAG = "platformq.stage"
STAGED_AGAINST_TAG = "platformq.staged_against"  # the champion version a staged version's gate compared it with
ROLLED_BACK_TAG = "platformq.rolled_back"  # why a rollback took champion from it (removed when promoted again)
STAGES = ("dev", "staging", "production", "archived")
HISTORY_MAX_CHARS = 5000  # MLflow's SQL store keeps a registered model's tag value in a varchar(5000)
HISTORY_REASON_CHARS = 500  # of an event's reason in the history (one event must fit with room for others)


def shown_uri(uri: str) -> str:
    """``uri`` as it may be shown: scheme, host, port and path, without userinfo, query or fragment (a URI that
    cannot be taken apart is shown as its scheme only)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return uri.split(":", 1)[0] + ":<redacted>" if ":" in uri else "<redacted>"
    if not parts.scheme or len(parts.scheme) == 1:  # a plain path (or a Windows drive letter)
        return uri
    netloc = f"{parts.hostname or ''}{port}" if parts.netloc else ""
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.netloc or uri.startswith(f"{parts.scheme}://") \
        else f"{parts.scheme}:{parts.path}"


class MlflowResource(ConfigurableResource):
    tracking_uri: str
    registry_uri: str | None = None
    artifact_location: str | None = None  # root for experiments created here (local profile)
    # an s3:// artifact location is written by this process's MLflow client (boto3), not the tracking server:
    # it needs the object store's endpoint and keys (MinIO, moto), or boto3 goes to AWS
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"

    def _s3_environment(self) -> None:
        """MLflow's S3 artifact repository reads its endpoint and keys from the environment; they are set (where
        the deployment has not set them itself) before any client exists, and processes started from here
        inherit them."""
        import os

        if not self.s3_endpoint or not (self.artifact_location or "").startswith("s3://"):
            return  # artifacts proxied by the tracking server (--serve-artifacts): no AWS_* for this process
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", self.s3_endpoint)
        if self.s3_access_key:
            os.environ.setdefault("AWS_ACCESS_KEY_ID", self.s3_access_key)
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", self.s3_secret_key or "")
        os.environ.setdefault("AWS_DEFAULT_REGION", self.s3_region)

    def _mlflow(self):
        import os

        import mlflow

        self._s3_environment()
        # processes started from here (Ray workers, Pipes children) log to the same place
        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)
        return mlflow

    def client(self):
        from mlflow import MlflowClient

        self._s3_environment()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri or self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        client = self.client()
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = f"{self.artifact_location.rstrip('/')}/{name}" if self.artifact_location else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # created concurrently by another process
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    @contextlib.contextmanager
    def start_run(self, experiment: str, run_name: str | None = None, tags: dict[str, str] | None = None,
                  nested: bool = False) -> Iterator[Any]:
        mlflow = self._mlflow()
        experiment_id = self.experiment_id(experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags, nested=nested) as run:
            yield run

    def run_url(self, run) -> str:
        """Where to open ``run``: shown in the run's metadata (event log, UI), so without the tracking URI's
        credentials (a user and password or token in its userinfo, a password in a database URI's query)."""
        info = run.info
        where = shown_uri(self.tracking_uri)
        if self.tracking_uri.startswith("http"):
            return f"{where.rstrip('/')}/#/experiments/{info.experiment_id}/runs/{info.run_id}"
        return f"{where} experiment {info.experiment_id} run {info.run_id}"

    # -- registry ---------------------------------------------------------
    def register(self, model_uri: str, name: str, tags: dict[str, str] | None = None,
                 description: str | None = None):
        """Register a new version as ``challenger`` (stage dev) and return it."""
        mlflow = self._mlflow()
        version = mlflow.register_model(model_uri, name, tags={STAGE_TAG: "dev", **(tags or {})})
        client = self.client()
        if description:
            client.update_model_version(name, version.version, description=description)
        client.set_registered_model_alias(name, CHALLENGER, version.version)
        self._record(name, {"event": "registered", "version": str(version.version)})
        return client.get_model_version(name, version.version)

    def version_for(self, name: str, alias: str):
        """The model version holding ``alias``, or None when the model or the alias does not exist. Any other
        error (the tracking server is down) is raised: "no champion" must not stand in for "registry down" (a
        promotion would skip recording the previous champion, serving would answer 409)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(name, alias)
        except MlflowException as exc:
            # a missing model: RESOURCE_DOES_NOT_EXIST; a missing alias: INVALID_PARAMETER_VALUE
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def set_stage(self, name: str, version: str | int, stage: str, reason: str, against: str | None = None) -> None:
        """Tag ``version`` with ``stage`` and why. ``against``: for staging, the champion version the gate compared
        it with ("" for none), which the champion asset checks before promoting. A version leaving staging loses
        the staging alias."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        client = self.client()
        version = str(int(version)) if str(version).isdigit() else str(version)  # "02" is version 2
        # what the stage depends on first, the stage last: dying in between leaves the old stage, never a staged
        # version without the champion its gate compared it with (the champion asset would promote it anyway)
        if stage == "staging" and against is not None:
            client.set_model_version_tag(name, str(version), STAGED_AGAINST_TAG, str(against))
        client.set_model_version_tag(name, str(version), f"platformq.{stage}_reason", reason[:5000])
        client.set_model_version_tag(name, str(version), STAGE_TAG, stage)
        if stage == "staging":
            client.set_registered_model_alias(name, STAGING, str(version))
        else:
            staged = self.version_for(name, STAGING)
            if staged is not None and str(staged.version) == str(version):
                client.delete_registered_model_alias(name, STAGING)
        self._record(name, {"event": f"stage:{stage}", "version": str(version), "reason": reason})

    def promote(self, name: str, version: str | int, reason: str) -> dict:
        """Make ``version`` the champion (dev/staging -> production) and keep the old one for rollback."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        version = str(version)
        # look the version up before anything moves: a missing one must leave the champion as it was
        try:
            target = client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            raise ValueError(f"model {name!r} has no version {version!r} to promote") from exc
        version = str(target.version)  # as the registry writes it: "02" finds version 2, and aliases compare "2"
        # MLflow has no multi-call transaction. The one move that matters, the champion alias, is a single call;
        # everything before it leaves the old champion serving, and everything after it is finished by running
        # the same promotion again (a champion that is not yet tagged production is completed, not skipped).
        current = self.version_for(name, CHAMPION)
        if current is not None and str(current.version) == version:
            if target.tags.get(STAGE_TAG) == "production":
                self._clear_waiting_aliases(name, version)  # a promotion that died just before this
                return {"promoted": False, "champion": version, "reason": "already champion"}
            previous = self.version_for(name, PREVIOUS_CHAMPION)
            previous = str(previous.version) if previous is not None else None
            self._finish_promotion(name, version, reason, previous)  # an earlier promotion stopped after the switch
            self._record(name, {"event": "promoted", "version": version, "replaced": previous, "reason": reason,
                                "resumed": True})
            return {"promoted": True, "champion": version, "previous": previous, "resumed": True}
        if target.tags.get(STAGE_TAG) == "dev":
            self.set_stage(name, version, "staging", reason)
        if current is not None:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, str(current.version))
        client.set_registered_model_alias(name, CHAMPION, version)  # the switch
        previous = str(current.version) if current is not None else None
        self._finish_promotion(name, version, reason, previous)
        self._record(name, {"event": "promoted", "version": version, "replaced": previous, "reason": reason})
        return {"promoted": True, "champion": version, "previous": previous}

    def _finish_promotion(self, name: str, version: str, reason: str, previous: str | None) -> None:
        client = self.client()
        if previous is not None and previous != version:
            client.set_model_version_tag(name, previous, STAGE_TAG, "archived")
        # a version rolled back once and promoted again is no longer rolled back: a stale tag made a later rollback
        # that stopped after its switch skip this version and call itself finished (it stayed production). Before
        # the production tag, which ends a re-run of this promotion.
        if client.get_model_version(name, version).tags.get(ROLLED_BACK_TAG) is not None:
            client.delete_model_version_tag(name, version, ROLLED_BACK_TAG)
        client.set_model_version_tag(name, version, "platformq.production_reason", reason[:5000])
        client.set_model_version_tag(name, version, STAGE_TAG, "production")
        self._clear_waiting_aliases(name, version)

    def _clear_waiting_aliases(self, name: str, version: str) -> None:
        """The champion is neither waiting (``challenger``) nor staged (``staging``) any more."""
        client = self.client()
        for alias in (CHALLENGER, STAGING):
            holder = self.version_for(name, alias)
            if holder is not None and str(holder.version) == version:
                client.delete_registered_model_alias(name, alias)

    def rollback(self, name: str, reason: str = "manual rollback") -> dict:
        """Give ``champion`` back to the version that held it before the last promotion."""
        client = self.client()
        previous = self.version_for(name, PREVIOUS_CHAMPION)
        if previous is None:
            raise ValueError(f"model {name!r} has no previous champion to roll back to")
        current = self.version_for(name, CHAMPION)
        back, replaced = str(previous.version), (str(current.version) if current is not None else None)
        if replaced == back:
            # an earlier rollback stopped after moving champion back: finish it, never archive the champion
            replaced = next((str(v.version) for v in client.search_model_versions(f"name='{name}'")
                             if v.tags.get(ROLLED_BACK_TAG) is None
                             and v.tags.get(STAGE_TAG) == "production" and str(v.version) != back), None)
            if replaced is None:
                # A rollback that stopped after archiving (the version it replaced is tagged rolled_back, and it
                # is the last one promoted): finished and recorded. Otherwise nothing serves but the champion
                # itself: a promotion stopped between naming the champion previous-champion and the switch.
                # "Rolling back" would change nothing and claim it had: the stale alias goes, and it says so.
                promoted = [e for e in self.history(name) if e.get("event") == "promoted"]
                last = promoted[-1]["version"] if promoted else None
                if last is not None and last != back and client.get_model_version(
                        name, last).tags.get(ROLLED_BACK_TAG) is not None:
                    client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
                    self._record(name, {"event": "rollback", "version": back, "replaced": last, "reason": reason,
                                        "resumed": True})
                    return {"champion": back, "replaced": last}
                client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
                raise ValueError(f"model {name!r}: previous-champion named the champion itself (v{back}; a "
                                 "promotion or rollback stopped half-way), so there is no earlier champion to roll "
                                 "back to; the stale alias is removed and v" + back + " stays champion")
        client.set_registered_model_alias(name, CHAMPION, back)
        client.set_model_version_tag(name, back, STAGE_TAG, "production")
        client.set_model_version_tag(name, back, "platformq.production_reason", reason)
        if replaced is not None:
            client.set_model_version_tag(name, replaced, STAGE_TAG, "archived")
            client.set_model_version_tag(name, replaced, ROLLED_BACK_TAG, reason)
        client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
        self._record(name, {"event": "rollback", "version": back, "replaced": replaced, "reason": reason})
        return {"champion": back, "replaced": replaced}

    def history(self, name: str) -> list[dict]:
        from mlflow.exceptions import MlflowException

        try:
            model = self.client().get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise ValueError(f"no registered model {name!r}") from None
        return json.loads(model.tags.get("platformq.history", "[]"))

    def _record(self, name: str, event: dict) -> None:
        # The registry keeps the model's life story as a bounded JSON tag, oldest events dropped first. A registered
        # model's tag is a varchar(5000) in MLflow's SQL backend store: on Postgres (production) a longer history
        # failed every registration, stage move, promotion and rollback after its registry call, for good.
        client = self.client()
        history = self.history(name)
        if isinstance(event.get("reason"), str):
            event = {**event, "reason": event["reason"][:HISTORY_REASON_CHARS]}  # whole on the version's tags
        history.append({**event, "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
        # measured as stored, characters not escapes (a varchar counts characters; an escaped emoji is 12 of them)
        while len(json.dumps(history, ensure_ascii=False)) > HISTORY_MAX_CHARS and len(history) > 1:
            history.pop(0)
        client.set_registered_model_tag(name, "platformq.history", json.dumps(history, ensure_ascii=False))


def mlflow_resource(settings, env_refs: bool = False) -> MlflowResource:
    from resources import setting

    return MlflowResource(tracking_uri=setting(settings, "mlflow_tracking_uri", env_refs,
                                               settings.effective_mlflow_tracking_uri),
                          artifact_location=settings.effective_mlflow_artifact_location,
                          s3_endpoint=settings.s3_endpoint,
                          s3_access_key=setting(settings, "s3_access_key", env_refs),
                          s3_secret_key=setting(settings, "s3_secret_key", env_refs),
                          s3_region=settings.s3_region)

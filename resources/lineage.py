"""OpenLineage emission: a JSON-lines file locally, HTTP to Marquez (or any OpenLineage backend)
in production. Events are built with openlineage-python's typed classes (their validators check
run ids, event times and facet shapes at construction) and sent through its transports."""

from __future__ import annotations

from dagster import ConfigurableResource

PRODUCER = "https://github.com/platformq/platformq/tree/main/sensors/lineage.py"
# urllib3 retries of an event's POST: a connection not made and a 502/503 (a proxy without a backend) are tried
# again; an event sent and not answered in time is not: openlineage-python's default retried such a read five
# times, so a backend that stored the event and answered late stored it six times, and one event took ~40 s to
# fail (most of a sensor tick's minute, the tick then keeping no cursor and sending it all again)
RETRY = {"total": 5, "connect": 3, "read": 0, "status": 3, "other": 0, "backoff_factor": 0.3,
         "status_forcelist": [502, 503], "allowed_methods": ["POST"]}


class OpenLineageResource(ConfigurableResource):
    namespace: str = "platformq"  # the namespace of our jobs
    dataset_namespace: str = "iceberg"  # where the tables live (the Iceberg warehouse URI)
    file_path: str | None = None  # local transport
    url: str | None = None  # http(s)://marquez:5000 in production
    endpoint: str = "api/v1/lineage"
    api_key: str | None = None
    timeout_s: float = 5.0  # per event sent over HTTP

    def client(self):
        from openlineage.client import OpenLineageClient

        if self.url:
            from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport

            # the endpoint is joined to the URL (urljoin): without a final slash a path in the URL lost its last
            # segment (http://gateway/marquez + api/v1/lineage -> http://gateway/api/v1/lineage)
            url = self.url if self.url.endswith("/") else self.url + "/"
            config = HttpConfig(url=url, endpoint=self.endpoint.lstrip("/"), timeout=self.timeout_s, retry=RETRY)
            if self.api_key:
                config.auth = ApiKeyTokenProvider({"apiKey": self.api_key})
            return OpenLineageClient(transport=HttpTransport(config))
        from pathlib import Path

        from openlineage.client.transport.file import FileConfig, FileTransport

        Path(self.file_path).parent.mkdir(parents=True, exist_ok=True)
        return OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=self.file_path, append=True)))

    def emit(self, events: list) -> int:
        client = self.client()
        for event in events:
            client.emit(event)
        return len(events)


def lineage_resource(settings, env_refs: bool = False) -> OpenLineageResource:
    from resources import setting

    if settings.openlineage_url:
        return OpenLineageResource(url=settings.openlineage_url,
                                   api_key=setting(settings, "openlineage_api_key", env_refs),
                                   dataset_namespace=settings.effective_warehouse)
    return OpenLineageResource(file_path=str(settings.home / "openlineage" / "events.jsonl"),
                               dataset_namespace=settings.effective_warehouse)

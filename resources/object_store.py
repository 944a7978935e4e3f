"""Object store: a local folder locally, S3/MinIO (through the ``minio`` client) in production."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import PrivateAttr


class ObjectStoreResource(ConfigurableResource):
    kind: str = "local"  # "local" or "s3"
    root: str = ".platformq/objects"  # local folder
    bucket: str | None = None
    endpoint: str | None = None  # http(s)://host:port
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"

    _client: Any = PrivateAttr(default=None)

    def _s3(self):
        if self._client is None:
            from urllib.parse import urlparse

            from minio import Minio

            url = urlparse(self.endpoint or "")
            self._client = Minio(url.netloc, access_key=self.access_key, secret_key=self.secret_key,
                                 secure=url.scheme == "https", region=self.region)
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)
        return self._client

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Write an object atomically (local: write then rename) and return its URI."""
        if self.kind == "s3":
            self._s3().put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)
            return f"s3://{self.bucket}/{key}"
        import os
        import tempfile

        path = Path(self.root) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        # a temporary file of this writer's own: concurrent writers of one key must not share it (the last
        # rename wins, whole; a shared name failed the others and could publish a mix)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # as a plain write would leave it (mkstemp makes it private)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path.resolve().as_uri()

    def get_bytes(self, key: str) -> bytes:
        if self.kind == "s3":
            response = self._s3().get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()
        return (Path(self.root) / key).read_bytes()

    def list_keys(self, prefix: str = "") -> list[str]:
        if self.kind == "s3":
            return sorted(o.object_name for o in self._s3().list_objects(self.bucket, prefix=prefix, recursive=True))
        root = Path(self.root)
        if not root.exists():
            return []
        return sorted(
            str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp") and str(p.relative_to(root)).startswith(prefix)
        )

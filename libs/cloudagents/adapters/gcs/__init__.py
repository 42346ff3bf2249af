"""Cloud Storage adapter (the client is synchronous: calls run in a worker thread)."""

from __future__ import annotations

import asyncio
from typing import Any

from google.api_core import exceptions as gexc

from cloudagents.metrics import count


def split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise ValueError(f"not a gs://bucket/name URI: {uri!r}")
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


class GcsBlobStore:
    """Objects in Cloud Storage."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def put(self, bucket: str, name: str, data: bytes, content_type: str) -> str:
        blob = self.client.bucket(bucket).blob(name)
        await asyncio.to_thread(blob.upload_from_string, data, content_type=content_type)
        count("gcs.write")
        return f"gs://{bucket}/{name}"

    async def get(self, uri: str) -> bytes | None:
        bucket, name = split_uri(uri)
        blob = self.client.bucket(bucket).blob(name)
        count("gcs.read")
        try:
            data: bytes = await asyncio.to_thread(blob.download_as_bytes)
        except gexc.NotFound:
            return None
        return data

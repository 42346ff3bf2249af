"""``FirestoreFunctionRepository``: stored functions on Firestore, large code in the bucket.

Layout:

- ``functions/{name}``: the alias, ``{name, current, history, updated_at}``; ``history`` keeps the
  last ``HISTORY_LIMIT`` hashes (older moves stay derivable from the versions' ``created_at``).
  Moved in a transaction.
- ``functions/{name}/versions/{hash}``: one immutable ``FunctionVersion``, written with
  ``create()`` (a second save of the hash is a no-op). Code over ``INLINE_CODE_LIMIT`` bytes is
  stored at ``gs://{bucket}/functions/{name}/{hash}.py``; the document then has ``code: ""``
  and ``code_uri``. ``get_version(hash)`` is a collection-group query on ``versions`` by the
  ``hash`` field (production needs that field's collection-group single-field index enabled).
- ``function_executions/{inverted-time}-{uuid}``: one ``ExecutionRecord``. The id sorts newest
  first, so listing per function, per agent or both is equality filters ordered by document id,
  which the automatic single-field indexes serve (no composite index).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from cloudagents.adapters.firestore.ops import (
    counted_get,
    counted_stream,
    from_doc,
    to_doc,
    transact,
    written,
)
from cloudagents.domain.runs import utcnow
from cloudagents.functions.errors import FunctionNotFound
from cloudagents.functions.versions import ExecutionRecord, FunctionAlias, FunctionVersion
from cloudagents.ports.bus import BlobStore

FUNCTIONS = "functions"
VERSIONS = "versions"
EXECUTIONS = "function_executions"

HISTORY_LIMIT = 100
# Firestore allows 1 MiB per document; the code is only part of the version document.
INLINE_CODE_LIMIT = 256 * 1024
_CODE_URI = "code_uri"
# Microseconds since the epoch stay below 10**17 until the year 5138.
_TIME_CEILING = 10**17


def execution_doc_id(started_at: datetime) -> str:
    """A document id that sorts newest first (ties broken by a random suffix)."""
    micros = int(started_at.timestamp() * 1_000_000)
    return f"{_TIME_CEILING - micros:017d}-{uuid.uuid4().hex}"


class FirestoreFunctionRepository:
    """``FunctionRepository`` on Firestore, with code over ``inline_limit`` bytes in ``bucket``."""

    def __init__(
        self,
        client: firestore.AsyncClient,
        blobs: BlobStore,
        bucket: str,
        *,
        inline_limit: int = INLINE_CODE_LIMIT,
        history_limit: int = HISTORY_LIMIT,
    ) -> None:
        self.client = client
        self.blobs = blobs
        self.bucket = bucket
        self.inline_limit = inline_limit
        self.history_limit = history_limit
        self.functions = client.collection(FUNCTIONS)
        self.executions_collection = client.collection(EXECUTIONS)

    def _alias_ref(self, name: str) -> Any:
        return self.functions.document(name)

    def _version_ref(self, name: str, version_hash: str) -> Any:
        return self._alias_ref(name).collection(VERSIONS).document(version_hash)

    async def save_version(self, version: FunctionVersion) -> None:
        ref = self._version_ref(version.name, version.hash)
        data: dict[str, Any] = to_doc(version.model_dump(mode="json"))
        code = version.code.encode("utf-8")
        if len(code) > self.inline_limit:
            if (await counted_get(ref)).exists:
                return
            # The object first: a version document never points at code that is not there.
            uri = await self.blobs.put(
                self.bucket,
                f"{FUNCTIONS}/{version.name}/{version.hash}.py",
                code,
                "text/x-python",
            )
            data["code"] = ""
            data[_CODE_URI] = uri
        try:
            await written(ref).create(data)
        except gexc.AlreadyExists:
            return

    async def _version(self, data: dict[str, Any]) -> FunctionVersion:
        uri = data.pop(_CODE_URI, None)
        if isinstance(uri, str):
            code = await self.blobs.get(uri)
            if code is None:
                raise FunctionNotFound(f"the code of version {data.get('hash')} is missing: {uri}")
            data["code"] = code.decode("utf-8")
        return FunctionVersion.model_validate(from_doc(data))

    async def get_version(self, version_hash: str) -> FunctionVersion | None:
        # The port looks versions up by hash alone; the hash does not cover the name, so the same
        # content saved under two names has two documents. The first saved wins, as in memory.
        query = self.client.collection_group(VERSIONS).where(
            filter=firestore.FieldFilter("hash", "==", version_hash)
        )
        found: list[dict[str, Any]] = []
        async for snap in counted_stream(query):
            function_ref = snap.reference.parent.parent
            if function_ref is None or function_ref.parent.id != FUNCTIONS:
                continue
            found.append(snap.to_dict())
        if not found:
            return None
        first = min(found, key=lambda d: str(d.get("created_at", "")))
        return await self._version(first)

    async def point_alias(self, name: str, version_hash: str) -> FunctionAlias:
        ref = self._alias_ref(name)

        @firestore.async_transactional
        async def apply(transaction: Any) -> FunctionAlias:
            snap = await counted_get(ref, transaction)
            if not snap.exists:
                alias = FunctionAlias(name=name, current=version_hash, history=[version_hash])
            else:
                alias = FunctionAlias.model_validate(from_doc(snap.to_dict()))
                if alias.current == version_hash:
                    return alias
                history = [*alias.history, version_hash][-self.history_limit :]
                alias = alias.model_copy(
                    update={"current": version_hash, "history": history, "updated_at": utcnow()}
                )
            written(transaction).set(ref, to_doc(alias.model_dump(mode="json")))
            return alias

        return await transact(self.client, apply)

    async def get_alias(self, name: str) -> FunctionAlias | None:
        snap = await counted_get(self._alias_ref(name))
        return FunctionAlias.model_validate(from_doc(snap.to_dict())) if snap.exists else None

    async def list_aliases(self) -> list[FunctionAlias]:
        # Document ids are the names; the default order (by id) is the order by name.
        return [
            FunctionAlias.model_validate(from_doc(d.to_dict()))
            async for d in counted_stream(self.functions)
        ]

    async def record_execution(self, record: ExecutionRecord) -> None:
        ref = self.executions_collection.document(execution_doc_id(record.started_at))
        await written(ref).create(to_doc(record.model_dump(mode="json")))

    async def executions(
        self, *, function: str | None = None, agent: str | None = None, limit: int = 100
    ) -> list[ExecutionRecord]:
        query: Any = self.executions_collection
        if function is not None:
            query = query.where(filter=firestore.FieldFilter("function", "==", function))
        if agent is not None:
            query = query.where(filter=firestore.FieldFilter("agent", "==", agent))
        query = query.order_by("__name__").limit(limit)
        return [
            ExecutionRecord.model_validate(from_doc(d.to_dict()))
            async for d in counted_stream(query)
        ]

"""Reading a Milvus collection for the Milvus gallery (:mod:`service.milvus_gallery`): rows by
id, every row matching an expression (paged through pymilvus's query iterator on a server), and
counts, always at the ``Strong`` consistency level."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pymilvus import MilvusClient

from service.milvus_client import milvus_errors

#: Ids per ``get`` request (each becomes an ``in [...]`` expression).
ID_BATCH = 500


class CollectionReads:
    """The reads of collection ``collection``; ``paged``: read large answers page by page (a
    server; Milvus Lite answers whole)."""

    def __init__(self, client: MilvusClient, collection: str, *, paged: bool) -> None:
        self.client = client
        self.collection = collection
        self.paged = paged

    def scan(
        self, expression: str, fields: list[str], batch_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every row matching ``expression``. A server caps one query's result window (16384
        rows), so it is read through pymilvus's query iterator, in primary-key pages. Milvus
        Lite answers a query without a limit whole, and lacks the timestamp service the iterator
        asks it for (every call would log a server error), so it is read in one query."""
        output_fields = ["tracklet_id", *fields]
        if not self.paged:
            yield from self.client.query(
                self.collection,
                filter=expression,
                output_fields=output_fields,
                consistency_level="Strong",
            )
            return
        for page in self.pages(expression, output_fields, batch_size):
            yield from page

    def pages(
        self, expression: str, fields: list[str], batch_size: int
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of pymilvus's query iterator (a server caps one query's result window)."""
        with milvus_errors("reading the gallery"):
            iterator = self.client.query_iterator(
                self.collection,
                batch_size=batch_size,
                filter=expression,
                output_fields=fields,
                consistency_level="Strong",
            )
        try:
            while True:
                with milvus_errors("reading the gallery"):
                    page = iterator.next()
                if not page:
                    return
                yield page
        finally:
            iterator.close()

    def get(
        self, ids: Sequence[str], fields: list[str], batch: int = ID_BATCH
    ) -> list[dict[str, Any]]:
        """The rows of these ids (missing ones left out), ``batch`` ids per request."""
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), batch):
            rows.extend(
                self.client.get(
                    self.collection,
                    ids=list(ids[start : start + batch]),
                    output_fields=fields,
                    consistency_level="Strong",
                )
            )
        return rows

    def count(self, expression: str) -> int:
        rows = self.client.query(
            self.collection,
            filter=expression,
            output_fields=["count(*)"],
            consistency_level="Strong",
        )
        return int(rows[0]["count(*)"])

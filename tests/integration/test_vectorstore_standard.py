"""langchain-tests' standard VectorStore suite, unmodified, on a sync-built and an async-built store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from sony_rag import Database, SonyVectorStore


class TestSonyVectorStoreSync(VectorStoreIntegrationTests):
    """The standard suite on a store used from synchronous fixtures."""

    @staticmethod
    def get_embeddings() -> Embeddings:
        """Return 384-d deterministic fake embeddings (the table holds vector(384))."""
        return DeterministicFakeEmbedding(size=384)

    @pytest.fixture
    def vectorstore(self, db: Database) -> Iterator[SonyVectorStore]:  # type: ignore[override]
        """Return an empty store."""
        yield SonyVectorStore(self.get_embeddings(), db)


class TestSonyVectorStoreAsync(VectorStoreIntegrationTests):
    """The standard suite on a store created inside the test's event loop."""

    @staticmethod
    def get_embeddings() -> Embeddings:
        """Return 384-d deterministic fake embeddings (the table holds vector(384))."""
        return DeterministicFakeEmbedding(size=384)

    @pytest.fixture
    async def vectorstore(self, db: Database) -> AsyncIterator[SonyVectorStore]:  # type: ignore[override]
        """Return an empty store whose async pool belongs to this test's loop."""
        store = SonyVectorStore(self.get_embeddings(), db)
        await db.apool()
        yield store

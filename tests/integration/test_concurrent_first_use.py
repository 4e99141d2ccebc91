"""Many async tasks making their first call on a new Database at once share one pool, opened once."""

from __future__ import annotations

import asyncio

import numpy as np
from helpers import test_settings

from sony_rag import Database
from sony_rag.operations import search_similar_embeddings


async def test_sixteen_tasks_first_calls_at_once_all_succeed(database_url: str) -> None:
    db = Database(database_url, settings=test_settings(pool_min_size=4, pool_max_size=16))
    try:
        query = np.ones(384, dtype=np.float32)
        results = await asyncio.gather(*(search_similar_embeddings(query, limit=3, db=db) for _ in range(16)))
        assert len(results) == 16 and all(isinstance(result, list) for result in results)
        assert await db.apool() is await db.apool()
    finally:
        await db.aclose()

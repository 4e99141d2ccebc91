SELECT source_type, source_id, metadata->>'embedding_model' AS model, count(*) AS chunks FROM document_embeddings WHERE metadata ? 'embedding_model' AND metadata->>'embedding_model' <> %(p0)s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
-- params: p0

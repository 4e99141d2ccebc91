SELECT source_id, count(*) AS chunks, array_agg(DISTINCT metadata->>'content_hash') AS content_hashes FROM document_embeddings WHERE source_type = %(p0)s AND source_id = ANY(%(p1)s::text[]) GROUP BY source_id
-- params: p0, p1

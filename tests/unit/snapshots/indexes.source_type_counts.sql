SELECT source_type, count(*) AS row_count FROM document_embeddings GROUP BY source_type ORDER BY source_type
-- params: none

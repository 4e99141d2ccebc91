-- 003: full-text search beside the vector, for hybrid retrieval (the documented columns stay as they are).
-- 'english' stems words ("tables" matches "table") and its parser keeps codes such as SX-1123 as the
-- adjacent tokens 'sx' '-1123', which websearch_to_tsquery turns into the phrase 'sx' <-> '-1123'.
-- source_id is included so that slugs and SKUs used as ids match too. The configuration is named
-- explicitly because a stored generated column needs an immutable expression; to use another one, add a
-- migration that drops and re-adds this column with it, and set SONY_RAG_TEXT_SEARCH_CONFIG to match.
ALTER TABLE document_embeddings ADD COLUMN search_vector tsvector
    GENERATED ALWAYS AS (
        to_tsvector('english'::regconfig, content_chunk || ' ' || coalesce(source_id, ''))
    ) STORED;
CREATE INDEX idx_document_embeddings_search_vector ON document_embeddings USING gin (search_vector);

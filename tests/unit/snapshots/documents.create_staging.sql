CREATE TEMP TABLE "sony_rag_staging" (LIKE document_embeddings INCLUDING DEFAULTS) ON COMMIT DROP
-- params: none

-- 006: finer statistics of document_embeddings.metadata.
-- A search under a filter of metadata keys decides between the vector index and an exact scan from ANALYZE's
-- statistics of this column (sony_rag.sql.documents.estimated_matches): its most common values and a histogram
-- of the rest. At the default statistics target the histogram has 100 buckets, so it cannot tell a filter
-- matching 0.1 % of the rows from one matching 1 % (both come out near half a bucket), and the choice for one of
-- them is wrong: a 1 % filter scanned exactly in 358 ms where the index answered in 64 ms at 0.975 recall, or a
-- 0.1 % filter answered by the index at 0.8 recall. 1000 buckets resolve 0.1 %; ANALYZE then samples up to
-- 300,000 rows instead of 30,000 (about 1.5 s more at 100,000 rows), and estimating a new filter reads the
-- larger statistics once (about 6 ms; remembered for a minute).
ALTER TABLE document_embeddings ALTER COLUMN metadata SET STATISTICS 1000;
ANALYZE document_embeddings (metadata);

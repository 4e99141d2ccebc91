SELECT to_regclass('sony_rag_migrations') IS NOT NULL AS exists
-- params: none

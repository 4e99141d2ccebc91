SELECT version, checksum FROM sony_rag_migrations ORDER BY version
-- params: none

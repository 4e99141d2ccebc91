INSERT INTO sony_rag_migrations (version, name, checksum) VALUES (%(p0)s, %(p1)s, %(p2)s)
-- params: p0, p1, p2

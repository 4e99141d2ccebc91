SELECT pg_relation_size(to_regclass(%(p0)s)) AS size_bytes
-- params: p0

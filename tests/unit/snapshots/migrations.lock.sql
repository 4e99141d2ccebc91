SELECT pg_advisory_xact_lock(%(p0)s::bigint)
-- params: p0

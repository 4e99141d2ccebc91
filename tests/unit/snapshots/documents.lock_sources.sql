SELECT count(pg_advisory_xact_lock(hashtextextended(key, 0))) AS locked FROM (SELECT DISTINCT unnest(%(p0)s::text[]) AS key ORDER BY 1) AS keys
-- params: p0

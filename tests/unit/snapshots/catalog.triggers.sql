SELECT tgname AS name FROM pg_trigger WHERE tgrelid = to_regclass(%(p0)s::text) AND NOT tgisinternal ORDER BY tgname
-- params: p0

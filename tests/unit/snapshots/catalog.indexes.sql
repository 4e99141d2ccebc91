SELECT c.relname AS name, i.indisunique AS unique, substring(pg_get_indexdef(i.indexrelid) from ' (USING .*)$') AS definition FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(%(p0)s::text) AND NOT i.indisprimary ORDER BY c.relname
-- params: p0

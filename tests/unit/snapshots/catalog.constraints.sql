SELECT conname AS name, contype AS kind, pg_get_constraintdef(oid) AS definition FROM pg_constraint WHERE conrelid = to_regclass(%(p0)s::text) ORDER BY conname
-- params: p0

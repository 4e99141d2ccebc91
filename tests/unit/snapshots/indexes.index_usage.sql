SELECT schemaname, relname AS tablename, indexrelname AS indexname, idx_scan, pg_relation_size(indexrelid) AS size_bytes FROM pg_stat_user_indexes WHERE schemaname = current_schema() AND relname = ANY(%(p0)s::text[]) ORDER BY idx_scan DESC, indexrelname
-- params: p0

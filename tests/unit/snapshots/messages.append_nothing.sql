WITH session AS (UPDATE chat_sessions SET updated_at = NOW(), current_page = COALESCE(%(p1)s::text, current_page) WHERE session_id = %(p0)s::uuid RETURNING session_id) SELECT count(*) AS sessions FROM session
-- params: p0, p1

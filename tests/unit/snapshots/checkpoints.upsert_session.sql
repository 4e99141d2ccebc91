INSERT INTO chat_sessions (session_id, current_page, metadata) VALUES (%(p0)s::uuid, %(p1)s::text, %(p2)s) ON CONFLICT (session_id) DO UPDATE SET updated_at = NOW(), current_page = COALESCE(EXCLUDED.current_page, chat_sessions.current_page)
-- params: p0, p1, p2

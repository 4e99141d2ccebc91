INSERT INTO chat_sessions (session_id, user_agent, current_page, metadata) VALUES (%(p0)s::uuid, %(p1)s, %(p2)s, %(p3)s) ON CONFLICT (session_id) DO NOTHING RETURNING session_id, created_at, updated_at, user_agent, current_page, metadata
-- params: p0, p1, p2, p3

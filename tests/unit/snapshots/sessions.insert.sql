INSERT INTO chat_sessions (session_id, user_agent, current_page, metadata) VALUES (gen_random_uuid(), %(p0)s, %(p1)s, %(p2)s) RETURNING session_id, created_at, updated_at, user_agent, current_page, metadata
-- params: p0, p1, p2

INSERT INTO chat_messages (session_id, role, content, created_at, token_usage, page_context, metadata, message_key) SELECT %(p0)s::uuid, role, content, created_at, token_usage, page_context, metadata, message_key FROM chat_messages WHERE session_id = %(p1)s::uuid ORDER BY seq RETURNING seq
-- params: p0, p1

SELECT message_id, session_id, role, content, created_at, token_usage, page_context, metadata, seq FROM (SELECT message_id, session_id, role, content, created_at, token_usage, page_context, metadata, seq FROM chat_messages WHERE session_id = %(p0)s ORDER BY seq DESC LIMIT %(p1)s) newest ORDER BY seq
-- params: p0, p1

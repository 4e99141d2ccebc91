INSERT INTO chat_messages (session_id, role, content) VALUES (%(p0)s, 'robot', 'x')
-- params: p0

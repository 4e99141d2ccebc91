DELETE FROM chat_sessions WHERE updated_at < NOW() - %(p0)s::interval
-- params: p0

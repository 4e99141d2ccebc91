SELECT role, content, metadata::text AS metadata FROM (SELECT role, content, metadata, seq FROM chat_messages WHERE session_id = %(p0)s ORDER BY seq DESC LIMIT %(p1)s) newest ORDER BY seq
-- params: p0, p1

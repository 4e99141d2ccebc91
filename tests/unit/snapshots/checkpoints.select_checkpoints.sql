SELECT c.session_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint, c.metadata, s.metadata ->> 'langgraph_thread_id' AS thread_name FROM chat_checkpoints c JOIN chat_sessions s ON s.session_id = c.session_id WHERE c.session_id = %(p0)s::uuid AND c.checkpoint_ns = %(p1)s::text ORDER BY c.checkpoint_id DESC
-- params: p0, p1

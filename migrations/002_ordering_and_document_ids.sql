-- 002: what sony-rag needs beyond the documented columns, which keep their documented types.

-- Exact insertion order of chat messages: timestamps tie within a transaction, an identity never does.
ALTER TABLE chat_messages ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
CREATE INDEX idx_chat_messages_session_seq ON chat_messages (session_id, seq);

-- LangChain document ids are any strings ("1", "foo"). embedding_id is a UUIDv5 of such an id, and the
-- id itself is kept here so it is returned exactly as given; NULL when the id is the UUID itself.
ALTER TABLE document_embeddings ADD COLUMN document_id TEXT;

-- The newest selections of a session, for selection-aware retrieval.
CREATE INDEX idx_user_text_selections_session_created ON user_text_selections (session_id, created_at);

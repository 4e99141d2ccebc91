-- 001_initial_schema: the four documented tables of DATABASE.md, their indexes, constraints and triggers.
-- An applied migration never changes: later changes go in new numbered files.

CREATE EXTENSION IF NOT EXISTS vector;

-- Keeps updated_at current on every UPDATE, whoever writes the row.
CREATE OR REPLACE FUNCTION update_updated_at_column() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = NOW();
    RETURN NEW;
END;
$$;

CREATE TABLE IF NOT EXISTS chat_sessions (
    session_id   UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    user_agent   TEXT,
    current_page TEXT,
    metadata     JSONB NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS idx_chat_sessions_created_at ON chat_sessions (created_at);
CREATE INDEX IF NOT EXISTS idx_chat_sessions_updated_at ON chat_sessions (updated_at);
CREATE OR REPLACE TRIGGER update_chat_sessions_updated_at
    BEFORE UPDATE ON chat_sessions
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE TABLE IF NOT EXISTS chat_messages (
    message_id   UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id   UUID NOT NULL,
    role         VARCHAR(20) NOT NULL,
    content      TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    token_usage  INTEGER,
    page_context TEXT,
    metadata     JSONB NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT chat_messages_session_id_fkey FOREIGN KEY (session_id)
        REFERENCES chat_sessions (session_id) ON DELETE CASCADE,
    CONSTRAINT chat_messages_role_check CHECK (role IN ('user', 'assistant', 'system'))
);
CREATE INDEX IF NOT EXISTS idx_chat_messages_session_id ON chat_messages (session_id);
CREATE INDEX IF NOT EXISTS idx_chat_messages_role ON chat_messages (role);

CREATE TABLE IF NOT EXISTS document_embeddings (
    embedding_id  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    source_type   VARCHAR(50) NOT NULL,
    source_id     TEXT,
    content_chunk TEXT NOT NULL,
    embedding     vector(384) NOT NULL,
    metadata      JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT document_embeddings_source_type_check
        CHECK (source_type IN ('product', 'page_content', 'faq', 'policy'))
);
-- Cosine distance, as every search uses `embedding <=> query`. lists = 100 suits up to ~100k rows;
-- `sony-rag index rebuild` sizes it from the row count once data is loaded.
CREATE INDEX IF NOT EXISTS idx_document_embeddings_vector
    ON document_embeddings USING ivfflat (embedding vector_cosine_ops) WITH (lists = 100);
CREATE INDEX IF NOT EXISTS idx_document_embeddings_source_type ON document_embeddings (source_type);
CREATE INDEX IF NOT EXISTS idx_document_embeddings_source_id ON document_embeddings (source_id);
CREATE INDEX IF NOT EXISTS idx_document_embeddings_source ON document_embeddings (source_type, source_id);
CREATE OR REPLACE TRIGGER update_document_embeddings_updated_at
    BEFORE UPDATE ON document_embeddings
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE TABLE IF NOT EXISTS user_text_selections (
    selection_id  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id    UUID NOT NULL,
    selected_text TEXT NOT NULL,
    page_url      TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    embedding     vector(384),
    metadata      JSONB NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT user_text_selections_session_id_fkey FOREIGN KEY (session_id)
        REFERENCES chat_sessions (session_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS idx_user_text_selections_session_id ON user_text_selections (session_id);
CREATE INDEX IF NOT EXISTS idx_user_text_selections_page_url ON user_text_selections (page_url);

-- 004: LangGraph checkpoints on the chat tables (sony_rag.checkpointer.SonyCheckpointer).
-- A thread is a chat_sessions row; the messages of its "messages" channel are chat_messages rows, written once.
-- Everything else of a checkpoint lives in the three tables below, keyed to the session with ON DELETE CASCADE,
-- so delete_chat_session, prune and retention remove a thread completely.

-- Which message of the agent's state a row holds: "<message id>:<digest of its fields>", unique per session, so
-- a message is written once however many checkpoints list it, and a message replaced under the same id (an
-- edited tool call) gets a row of its own. NULL for rows written by SonyChatMessageHistory or insert_chat_message.
ALTER TABLE chat_messages ADD COLUMN message_key TEXT;
CREATE UNIQUE INDEX idx_chat_messages_session_key ON chat_messages (session_id, message_key);

CREATE TABLE chat_checkpoints (
    session_id           UUID NOT NULL,
    checkpoint_ns        TEXT NOT NULL DEFAULT '',
    checkpoint_id        TEXT NOT NULL,
    parent_checkpoint_id TEXT,
    checkpoint           JSONB NOT NULL,
    metadata             JSONB NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (session_id, checkpoint_ns, checkpoint_id),
    CONSTRAINT chat_checkpoints_session_id_fkey FOREIGN KEY (session_id)
        REFERENCES chat_sessions (session_id) ON DELETE CASCADE
);

-- A checkpoint's body keeps small channel values inline and, for the root namespace's "messages" list, its
-- runs: pairs (first seq, last seq) of chat_messages rows of the session, each covering consecutive rows, in order.

-- Other channel values, one row per (channel, version).
CREATE TABLE chat_checkpoint_blobs (
    session_id    UUID NOT NULL,
    checkpoint_ns TEXT NOT NULL DEFAULT '',
    channel       TEXT NOT NULL,
    version       TEXT NOT NULL,
    type          TEXT NOT NULL,
    blob          BYTEA,
    PRIMARY KEY (session_id, checkpoint_ns, channel, version),
    CONSTRAINT chat_checkpoint_blobs_session_id_fkey FOREIGN KEY (session_id)
        REFERENCES chat_sessions (session_id) ON DELETE CASCADE
);

-- Pending writes of a checkpoint's tasks; a write of messages to the root "messages" channel, once a later
-- checkpoint stored those messages as rows, keeps runs instead of a blob.
CREATE TABLE chat_checkpoint_writes (
    session_id    UUID NOT NULL,
    checkpoint_ns TEXT NOT NULL DEFAULT '',
    checkpoint_id TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    channel       TEXT NOT NULL,
    type          TEXT NOT NULL,
    blob          BYTEA,
    message_runs  BIGINT[],
    task_path     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (session_id, checkpoint_ns, checkpoint_id, task_id, idx),
    CONSTRAINT chat_checkpoint_writes_session_id_fkey FOREIGN KEY (session_id)
        REFERENCES chat_sessions (session_id) ON DELETE CASCADE
);
-- The writes of messages a put may point at rows: few at any time, found without reading the thread's others.
CREATE INDEX idx_chat_checkpoint_writes_pending_messages ON chat_checkpoint_writes (session_id)
    WHERE checkpoint_ns = '' AND channel = 'messages' AND message_runs IS NULL AND blob IS NOT NULL;

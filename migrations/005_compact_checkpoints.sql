-- 005: smaller LangGraph checkpoints (sony_rag.checkpointer.SonyCheckpointer).
-- A message row's key is the digest of the message alone: the digest covers the message's id already, and
-- the id is in the row's metadata, so keeping it in the key too cost every row (and its index entry) ~40 bytes.
UPDATE chat_messages SET message_key = regexp_replace(message_key, '^.*:', '') WHERE message_key LIKE '%:%';

-- A checkpoint's body as compact JSON text: jsonb spends several bytes per key and value on its binary
-- layout, which for a body of small values (channel versions) is a third more than the text. Only the saver
-- reads it, always whole.
ALTER TABLE chat_checkpoints ALTER COLUMN checkpoint TYPE json USING checkpoint::json;

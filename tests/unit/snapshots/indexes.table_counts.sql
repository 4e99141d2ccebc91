SELECT (SELECT count(*) FROM "chat_sessions") AS "chat_sessions", (SELECT count(*) FROM "chat_messages") AS "chat_messages", (SELECT count(*) FROM "document_embeddings") AS "document_embeddings", (SELECT count(*) FROM "user_text_selections") AS "user_text_selections"
-- params: none

"""SQL migrations shipped with sony-rag; applied in file-name order by sony_rag.migrate."""

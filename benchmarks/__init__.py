"""Benchmarks of sony-rag against the physical limit (bare psycopg) and langchain-postgres: ``python -m benchmarks``."""

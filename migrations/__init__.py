"""Alembic migrations (packaged so that an installed antihack can migrate its database)."""

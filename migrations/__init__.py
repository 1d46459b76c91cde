"""Alembic environment and revisions, packaged so that an installed bot can migrate."""

"""Alembic environment and revisions, packaged so that an installed bot can migrate."""

# The newest revision: what a serving bot expects to find, without loading Alembic
# (tests/db/test_schema.py holds it against Alembic's own head).
HEAD = "0007"

"""Storage: SQLAlchemy models, engines and sessions, migrations, the audit trail."""

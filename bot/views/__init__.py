"""Block Kit builders: domain objects in, Slack messages out (no Bolt, no I/O)."""

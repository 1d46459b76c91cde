"""Slack runtime: the Bolt app, its one /failover listener, and the HTTP server around it."""

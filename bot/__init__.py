"""The failover bot: ChatOps for a multi-region gateway behind a Cloudflare load balancer."""

"""One module per ``/failover`` subcommand: parse -> authorize -> call a service -> view."""

"""The machinery under the rules: the database and its tables, settings, logs, metrics, the
broker and the task publisher, heartbeats, secrets and the outbound-URL guard."""

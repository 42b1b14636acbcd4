"""What every service process shares: start-up, Kafka wiring, HTTP health and metrics, shutdown.

A service describes its domain logic (which topics it consumes, what it does with an event,
which background loops it runs, which HTTP routes it serves); this package runs it the same
way for all five: settings read once, telemetry set up, topics ensured, `/healthz`, `/readyz`
and `/metrics` served, SIGTERM handled by finishing the event in hand and leaving cleanly.
"""

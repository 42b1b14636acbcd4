"""Telemetry for every process: OpenTelemetry traces, Prometheus metrics, JSON logs.

"Never accept a change if you do not know how to tell that it is working" applies to this
system itself: every service sets up the three the same way through this package, and every
log line carries the trace and span ids of the release it belongs to.
"""

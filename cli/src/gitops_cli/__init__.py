"""The `gitops` command-line tool: run a service, request syncs, read the event stream.

The CLI is a composition root: it is the one place that knows every service, and it talks to
the running system only through Kafka, like the services do.
"""

"""The one place that talks to Git (GitPython)."""

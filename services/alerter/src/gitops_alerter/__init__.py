"""alerter: deploy failures, drift and errors to alerts for people and the alerts topic."""

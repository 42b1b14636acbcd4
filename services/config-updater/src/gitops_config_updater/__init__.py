"""config-updater: image events and promotion requests to commits in config repos."""

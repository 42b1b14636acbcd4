"""git-watcher: Git webhooks and polling to revisions and the rendered desired state."""

"""deployer: desired state to server-side apply, prune, health and rollback."""

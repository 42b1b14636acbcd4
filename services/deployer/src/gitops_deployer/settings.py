"""The deployer's own settings: where its sealing keys live and how often they are renewed.

They are read once, at build time, from a mapping of environment variables (`from_environ`),
and passed down as plain values; nothing deeper reads the environment.

| variable | default | meaning |
|---|---|---|
| GITOPS_SEALING_NAMESPACE | gitops-system | the namespace that keeps the sealing key Secrets |
| GITOPS_SEALING_CLUSTER | unset | the cluster of gitops.yaml that keeps them (unset: see below) |
| GITOPS_SEALING_RENEW_INTERVAL_SECONDS | 2592000 | a new key pair when the newest is this old |

With GITOPS_SEALING_CLUSTER unset, the keys live in the cluster the service's own credentials
reach, as the Kubernetes client finds them: `KUBECONFIG` (its current context), else
`~/.kube/config`, else the in-cluster service account.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from pydantic import ConfigDict, Field

from gitops_config import ConfigError, GitopsConfig
from gitops_config.errors import Problem
from gitops_config.models import Cluster, Name
from gitops_config.settings import ServiceSettings
from gitops_kube import sessions
from gitops_kube.sessions import Target
from gitops_sealing.keys import KeySettings

DEFAULT_RENEW_INTERVAL_SECONDS = 30 * 24 * 3600.0
"""Thirty days, Bitnami's controller's default key renewal period."""


class DeployerSettings(ServiceSettings):
    """Everything the deployer needs beyond the shared `Settings` and `gitops.yaml`."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        hide_input_in_errors=True,
    )

    sealing_namespace: Name = Field(
        default="gitops-system", validation_alias="GITOPS_SEALING_NAMESPACE"
    )
    # None: the cluster of the service's own credentials (see the module docstring).
    sealing_cluster: Name | None = Field(default=None, validation_alias="GITOPS_SEALING_CLUSTER")
    sealing_renew_interval_seconds: float = Field(
        default=DEFAULT_RENEW_INTERVAL_SECONDS,
        gt=0,
        validation_alias="GITOPS_SEALING_RENEW_INTERVAL_SECONDS",
    )

    def key_settings(self) -> KeySettings:
        """Where the key pairs are kept and how often they are renewed."""
        return KeySettings(
            namespace=self.sealing_namespace,
            renew_interval=datetime.timedelta(seconds=self.sealing_renew_interval_seconds),
        )

    def sealing_target(
        self, config: GitopsConfig, default_kubeconfig: str | None
    ) -> tuple[str, Target]:
        """A name for the cluster that keeps the keys (for messages), and how to reach it.

        Raises `ConfigError` when GITOPS_SEALING_CLUSTER names a cluster gitops.yaml lacks.
        """
        if self.sealing_cluster is None:
            return "(default)", default_target(default_kubeconfig)
        cluster = config.clusters.get(self.sealing_cluster)
        if cluster is None:
            known = ", ".join(sorted(config.clusters)) or "(none)"
            raise ConfigError(
                "environment",
                [
                    Problem(
                        path="GITOPS_SEALING_CLUSTER",
                        message=f"gitops.yaml has no cluster {self.sealing_cluster!r}; "
                        f"clusters: {known}",
                    )
                ],
            )
        return self.sealing_cluster, cluster_target(cluster, default_kubeconfig)


def default_target(default_kubeconfig: str | None) -> Target:
    """The cluster the service's own credentials reach, found as the Kubernetes client does."""
    if default_kubeconfig:
        return Target(Path(default_kubeconfig))
    home_config = Path.home() / ".kube" / "config"
    return Target(home_config) if home_config.is_file() else Target(None)


def cluster_target(cluster: Cluster, default_kubeconfig: str | None) -> Target:
    """How to reach a cluster of gitops.yaml (the rule every service shares)."""
    return sessions.target_for(
        kubeconfig=cluster.kubeconfig,
        context=cluster.context,
        in_cluster=cluster.in_cluster,
        default_kubeconfig=default_kubeconfig,
    )

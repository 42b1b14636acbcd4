"""The gitops.yaml model and the runtime settings, validated with clear errors.

Every service reads the same `gitops.yaml` and the same environment variables, so both are
defined, validated and explained here once: a mistake is reported the same way (file, line,
field, what to do) whichever service or CLI command finds it, and no service interprets the
configuration on its own. The model types live in `gitops_config.models`.
"""

from gitops_config.errors import ConfigError
from gitops_config.loading import load_config, parse_config
from gitops_config.models import GitopsConfig
from gitops_config.settings import Settings

__all__ = ["ConfigError", "GitopsConfig", "Settings", "load_config", "parse_config"]

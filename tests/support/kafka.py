"""What a test knows of its broker: where it is and which topic prefix is its own."""

from __future__ import annotations

from dataclasses import dataclass

from gitops_config import Settings


@dataclass(frozen=True)
class KafkaTarget:
    """A broker and a topic prefix of one's own, so tests never see each other's events."""

    bootstrap_servers: str
    prefix: str

    def settings(self, **extra: str) -> Settings:
        """Service settings pointing at this broker and prefix."""
        return Settings.from_env(
            {
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
                "GITOPS_TOPIC_PREFIX": self.prefix,
                **extra,
            }
        )

    def env(self) -> dict[str, str]:
        """The same settings as environment variables, for service processes."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "GITOPS_TOPIC_PREFIX": self.prefix,
        }

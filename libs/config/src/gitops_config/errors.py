"""The one exception type for configuration mistakes, so every entry point can report them alike.

A user who gets `gitops.yaml` or the environment wrong should read one message that names the
file (or variable), the field and what is wrong, never a traceback. `ConfigError` carries the
individual problems as data too, so the CLI can render them however it likes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration source.

    `path` is the field in dotted form (`apps[1].environments.staging.cluster`), empty when the
    problem is about the whole source; `line` is 1-based when the YAML parser knows it.
    """

    path: str
    message: str
    line: int | None = None

    def render(self, source: str) -> str:
        """Format as `source:line: path: message`, leaving out the parts that are unknown."""
        location = source if self.line is None else f"{source}:{self.line}"
        if self.path:
            return f"{location}: {self.path}: {self.message}"
        return f"{location}: {self.message}"


class ConfigError(Exception):
    """A configuration mistake: one readable message listing every problem found, one per line."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        """Record the problems found in `source` (a file name, or `environment`)."""
        if not problems:
            raise ValueError("a ConfigError needs at least one problem")
        self.source = source
        self.problems = tuple(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0].render(self.source)
        lines = [f"{self.source}: {len(self.problems)} problems:"]
        lines.extend(f"  {problem.render(self.source)}" for problem in self.problems)
        return "\n".join(lines)

    def __str__(self) -> str:
        """Return the rendered message (also `args[0]`)."""
        return self._render()


class CredentialError(ConfigError):
    """A credential could not be read; the message names the reference, never a value."""

    def __init__(self, reference: str, message: str) -> None:
        """Describe why `reference` (such as `{env: SLACK_URL}`) could not be read."""
        super().__init__(f"credential {reference}", [Problem(path="", message=message)])

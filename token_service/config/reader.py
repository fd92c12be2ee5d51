"""Reading environment variables for the settings: trimmed values, every problem collected."""

from __future__ import annotations

from collections.abc import Mapping


class EnvironmentReader:
    """Reads trimmed values (empty counts as unset) and collects problems."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        self.problems: list[str] = []

    def get(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def get_aliased(self, name: str, alias: str) -> str | None:
        value, legacy = self.get(name), self.get(alias)
        if value and legacy and value != legacy:
            self.fail(f"{name}={value!r} and its alias {alias}={legacy!r} disagree; set only {name}")
        return value or legacy

    def choice(self, name: str, allowed: tuple[str, ...], default: str | None) -> str:
        value = self.get(name) or default
        if value is None:
            self.fail(f"{name} is required; one of: {', '.join(allowed)}")
            return ""
        if value not in allowed:
            self.fail(f"{name}={value!r} is not one of: {', '.join(allowed)}")
        return value

    def fail(self, problem: str) -> None:
        self.problems.append(problem)

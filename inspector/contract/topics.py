"""Every MQTT topic of a station, built in one place from its prefix (the line contract).

    t = Topics.of("inspector/line3")
    t.verdict        # inspector/line3/verdict
    t.reply("x1")    # inspector/line3/cmd/model/reply/x1

The station, the gate, the golden check, the lab and the services build topics here only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str
    trigger: str  # the part triggers (a station may read them from another topic)

    @classmethod
    def of(cls, prefix: str, trigger: str | None = None) -> Topics:
        return cls(prefix, trigger or f"{prefix}/trigger")

    @property
    def verdict(self) -> str:
        return f"{self.prefix}/verdict"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def verify(self) -> str:
        """The golden check's outcome, retained."""
        return f"{self.prefix}/status/verify"

    @property
    def cmd_model(self) -> str:
        """Model requests (MQTT 5 request/response; admin only)."""
        return f"{self.prefix}/cmd/model"

    @property
    def shadow(self) -> str:
        return f"{self.prefix}/shadow"

    @property
    def gate(self) -> str:
        return f"{self.prefix}/gate"

    @property
    def spc_alarm(self) -> str:
        return f"{self.prefix}/spc/alarm"

    def reply(self, tag: str) -> str:
        """A requester's own topic for the answers to its model requests."""
        return f"{self.cmd_model}/reply/{tag}"

    def name(self, name: str) -> str:
        """A topic by its contract name: verdict, status, trigger, cmd/model, shadow …"""
        if name == "trigger":
            return self.trigger
        return f"{self.prefix}/{name}"

"""The simulator's faults, by name (the CLI lists them without importing the simulator)."""

FAULTS = (
    "none",
    "broker-restart",
    "source-loss",
    "slow-model",
    "kill-inspector",
    "bad-payloads",
    "model-error",
    "model-swap",
)

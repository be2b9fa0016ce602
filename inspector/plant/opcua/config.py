"""``plant.opcua``: the server's endpoint, security, users and recipes.

plant:
  opcua:
    endpoint: opc.tcp://0.0.0.0:4840/inspector/
    users_file: /etc/inspector/opcua-users.yaml   # python -m inspector.plant.opcua.users
    recipes: /var/lib/inspector/models            # the model files an engineer may select
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from ...contract.schema import setting

SecurityPolicy = Literal[
    "Basic256Sha256_SignAndEncrypt",
    "Basic256Sha256_Sign",
    "Aes256Sha256RsaPss_SignAndEncrypt",
    "Aes128Sha256RsaOaep_SignAndEncrypt",
    "None",
]


@dataclass(frozen=True, kw_only=True)
class OpcUaSection:
    endpoint: str = setting("opc.tcp://0.0.0.0:4840/inspector/", "the server's endpoint URL")
    application_uri: str = setting(
        "", "the server's ApplicationUri (default: urn:defect-inspector:STATION_ID)"
    )
    certificate: Path | None = setting(
        None,
        "the server's certificate (DER or PEM); none: a self-signed one is made at the first "
        "start in pki_dir and kept",
    )
    private_key: Path | None = setting(None, "the certificate's private key (PEM)")
    pki_dir: Path = setting(
        Path("opcua-pki"), "a writable folder for the self-signed certificate and its key"
    )
    trusted_clients: Path | None = setting(
        None,
        "a folder of client certificates (DER or PEM) allowed to open a secure channel; "
        "none: any client certificate (a user login is still required)",
    )
    security_policies: list[SecurityPolicy] = setting(
        help="the endpoints offered ('None' only for a test bench, never on a line)",
        factory=lambda: ["Basic256Sha256_SignAndEncrypt"],
    )
    allow_anonymous: bool = setting(
        False, "let clients in without a login (read and subscribe only; no method calls)"
    )
    users_file: Path | None = setting(
        None,
        "YAML file of users with roles (operator, engineer) and scrypt password hashes "
        "(python -m inspector.plant.opcua.users add FILE NAME ROLE)",
    )
    recipes: Path | None = setting(
        None,
        "the folder of model files (*.onnx) offered as recipes; none: the live model's folder",
    )
    results_kept: int = setting(100, "recent results kept for GetResultById and the Results folder")
    nice: int = setting(
        19,
        "the server process's CPU priority below the station's (0-19): when the PC is short "
        "of CPU, parts are inspected first and the MES's results wait",
    )
    recipe_timeout_s: float = setting(
        300.0, "how long PrepareRecipe waits for the station's answer (load, checks, golden set)"
    )

    def problems(self):
        url = urlparse(self.endpoint)
        if url.scheme != "opc.tcp" or not url.hostname or not url.port:
            yield "endpoint", "must look like opc.tcp://HOST:PORT/PATH"
        if (self.certificate is None) != (self.private_key is None):
            yield "certificate", "certificate and private_key go together (or neither: self-signed)"
        if not self.security_policies:
            yield "security_policies", "name at least one"
        if not self.allow_anonymous and self.users_file is None:
            yield "users_file", "required unless allow_anonymous is true (no one could log in)"
        if self.results_kept < 1:
            yield "results_kept", "must be at least 1"
        if not 0 <= self.nice <= 19:
            yield "nice", "must be between 0 and 19"
        if self.recipe_timeout_s <= 0:
            yield "recipe_timeout_s", "must be positive"

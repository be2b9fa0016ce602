"""The server's certificate: the configured one, or a self-signed one made at the first
start in ``pki_dir`` (key readable by the owner only) and kept for the next starts, so
that clients that trusted it once keep trusting it."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from ...errors import ConfigError
from .config import OpcUaSection

log = logging.getLogger(__name__)


async def certificate_files(cfg: OpcUaSection, app_uri: str) -> tuple[Path, Path]:
    """(certificate, private key) for the server; makes a self-signed pair when none is
    configured and none is kept in ``pki_dir`` yet."""
    if cfg.certificate is not None and cfg.private_key is not None:
        for key, p in (("certificate", cfg.certificate), ("private_key", cfg.private_key)):
            if not Path(p).is_file():
                raise ConfigError(f"plant.opcua.{key}: {p} does not exist")
        return Path(cfg.certificate), Path(cfg.private_key)
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    folder = Path(cfg.pki_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"plant.opcua.pki_dir: cannot create {folder}: {exc.strerror}") from None
    cert, key = folder / "server-cert.der", folder / "server-key.pem"
    existed = cert.is_file() and key.is_file()
    old_umask = os.umask(0o077)  # the key is written by the library: owner-only from birth
    try:
        await setup_self_signed_certificate(
            key,
            cert,
            app_uri,
            socket.gethostname(),
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            {"commonName": f"Defect Inspector {app_uri}", "organizationName": "Defect Inspector"},
        )
    except OSError as exc:
        raise ConfigError(f"plant.opcua.pki_dir: cannot write in {folder}: {exc}") from None
    finally:
        os.umask(old_umask)
    if not existed:
        log.warning("OPC UA: made a self-signed server certificate %s (key %s)", cert, key)
    return cert, key

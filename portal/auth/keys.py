"""The portal's own key pair for ``private_key_jwt`` client authentication at identity providers.

The private key comes from ``OIDC_CLIENT_KEY`` (a PEM, in the instance config or the environment);
without one, a key is generated on first use and kept in ``instance/oidc-client-key.pem`` (readable
by its owner only). Every host of one deployment must use the same key: set ``OIDC_CLIENT_KEY``
there. The public half is served as a JWKS at ``/.well-known/jwks.json`` for providers to fetch.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from flask import current_app
from joserfc.jwk import RSAKey

KEY_FILE = "oidc-client-key.pem"
_lock = threading.Lock()


def client_key() -> RSAKey:
    """The portal's private RSA key (with a stable ``kid``)."""
    configured = current_app.config.get("OIDC_CLIENT_KEY")
    if configured:
        return _with_kid(RSAKey.import_key(str(configured)))
    path = Path(current_app.instance_path) / KEY_FILE
    with _lock:
        if not path.exists():
            key = RSAKey.generate_key(2048, private=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key.as_pem(private=True))
        return _with_kid(RSAKey.import_key(path.read_bytes()))


def _with_kid(key: RSAKey) -> RSAKey:
    data = key.as_dict(private=True)
    data["kid"] = key.thumbprint()
    data["use"] = "sig"
    data["alg"] = "RS256"
    return RSAKey.import_key(data)


def public_jwks() -> dict[str, Any]:
    """The JWKS of the portal's public key."""
    return {"keys": [client_key().as_dict(private=False)]}

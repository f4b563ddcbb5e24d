"""One credential lookup for every component (client, pool, CLI commands).

Explicit arguments win; otherwise the environment is searched for the variable pairs of
:data:`ENV_PAIRS`, in order: Alpaca's own SDK names first, then the shorter ones some tools use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from trioalpaca._errors import CredentialsError

__all__ = ["ENV_PAIRS", "env_credentials", "resolve_credentials"]

#: ``(key variable, secret variable)`` pairs searched in the environment, in order.
ENV_PAIRS: tuple[tuple[str, str], ...] = (
    ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"),
    ("ALPACA_API_KEY", "ALPACA_API_SECRET"),
)

#: The end of every "no credentials" message: where the lookup searched.
WHERE = (
    "set APCA_API_KEY_ID and APCA_API_SECRET_KEY (or ALPACA_API_KEY and ALPACA_API_SECRET) in "
    "the environment"
)


def env_credentials(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The first complete key pair of :data:`ENV_PAIRS` found in ``environ`` (default
    ``os.environ``), or ``None``."""
    env = os.environ if environ is None else environ
    for key_var, secret_var in ENV_PAIRS:
        key, secret = env.get(key_var), env.get(secret_var)
        if key and secret:
            return key, secret
    return None


def resolve_credentials(
    api_key: str | None, api_secret: str | None, *, how: str = "pass api_key= and api_secret="
) -> tuple[str, str]:
    """Explicit credentials, or the environment's.

    Raises:
        CredentialsError: only one of the two was given, or none was given and none is set.
    """
    if (api_key is None) != (api_secret is None):
        raise CredentialsError("pass both api_key and api_secret, or neither")
    if api_key is not None and api_secret is not None:
        if not api_key or not api_secret:
            raise CredentialsError("api_key and api_secret must not be empty")
        return api_key, api_secret
    found = env_credentials()
    if found is None:
        raise CredentialsError(f"no API credentials: {how}, or {WHERE}")
    return found

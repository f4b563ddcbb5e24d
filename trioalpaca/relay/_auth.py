"""Local keys of the relay and the upstream accounts they map to.

Downstream clients authenticate with *local* keys that only the relay knows; each local key maps
to one upstream *account* (an Alpaca key id and secret). The upstream secret never leaves the
relay: it is not sent downstream, not logged and not shown in any ``repr``.

Keys file format (one local key per line, ``#`` comments and blank lines ignored)::

    # local-key  local-secret  [account]
    notebook     s3cret-1
    strategy-a   s3cret-2      paper2
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from .._errors import CredentialsError, UsageError

__all__ = ["DEFAULT_ACCOUNT", "Account", "LocalKey", "is_loopback", "load_keys_file"]

#: Name of the account used when a local key names none.
DEFAULT_ACCOUNT = "default"


@attrs.frozen(repr=False)
class Account:
    """Upstream Alpaca credentials of one account (the secret is never shown)."""

    key_id: str
    secret: str = attrs.field(repr=False)

    def __repr__(self) -> str:
        return f"Account(key_id={self.key_id!r}, secret=***)"


@attrs.frozen(repr=False)
class LocalKey:
    """A local key's secret and the account it maps to."""

    secret: str
    account: str = DEFAULT_ACCOUNT

    def __repr__(self) -> str:
        return f"LocalKey(secret=***, account={self.account!r})"


def load_keys_file(path: str | os.PathLike[str]) -> dict[str, LocalKey]:
    """Read a keys file (``local-key local-secret [account]`` per line).

    Raises:
        UsageError: the file cannot be read, a line is malformed, or a key appears twice.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read keys file {os.fspath(path)!r}: {exc.strerror}") from None
    keys: dict[str, LocalKey] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            raise UsageError(
                f"keys file {os.fspath(path)!r} line {n}: expected 'local-key local-secret "
                "[account]'"
            )
        if parts[0] in keys:
            raise UsageError(f"keys file {os.fspath(path)!r} line {n}: duplicate key {parts[0]!r}")
        keys[parts[0]] = LocalKey(parts[1], parts[2] if len(parts) == 3 else DEFAULT_ACCOUNT)
    return keys


def normalize_local_keys(
    local_keys: Mapping[str, str | LocalKey] | None, accounts: Iterable[str]
) -> dict[str, LocalKey]:
    """Validate local keys against the configured accounts."""
    names = set(accounts)
    out: dict[str, LocalKey] = {}
    for key, value in (local_keys or {}).items():
        lk = value if isinstance(value, LocalKey) else LocalKey(str(value))
        if not key or not lk.secret:
            raise UsageError("local keys and their secrets must be non-empty")
        if lk.account not in names:
            raise UsageError(
                f"local key {key!r} maps to unknown account {lk.account!r}; "
                f"configured: {', '.join(sorted(names)) or 'none'}"
            )
        out[key] = lk
    return out


def normalize_accounts(
    upstream: Account | tuple[str, str] | Mapping[str, Account | tuple[str, str]],
) -> dict[str, Account]:
    """``{name: Account}`` from one account (named ``"default"``) or a mapping."""
    if isinstance(upstream, (Account, tuple)):
        upstream = {DEFAULT_ACCOUNT: upstream}
    out: dict[str, Account] = {}
    for name, value in upstream.items():
        acc = value if isinstance(value, Account) else Account(*value)
        if not acc.key_id or not acc.secret:
            raise CredentialsError(f"account {name!r} needs a key id and a secret")
        out[name] = acc
    if not out:
        raise CredentialsError("the relay needs at least one upstream account")
    return out


def check_secret(expected: str, given: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(expected.encode(), given.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback interface (``127.0.0.0/8``, ``::1`` or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

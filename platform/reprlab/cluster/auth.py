"""The Ray cluster token, from Ray's standard places, so that a submission to a cluster with
token authentication (Ray 2.60's default) just works, and a missing or refused token is one
line naming where reprlab looked."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TOKEN_VARIABLE = "RAY_AUTH_TOKEN"
TOKEN_PATH_VARIABLE = "RAY_AUTH_TOKEN_PATH"


def default_token_path() -> Path:
    """Where `ray get-auth-token --generate` writes the token."""
    return Path.home() / ".ray" / "auth_token"


@dataclass(frozen=True)
class ClusterToken:
    """A token and where it came from (named in errors, never the token itself)."""

    value: str
    source: str

    def header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"}


def looked_in() -> str:
    """The places searched, in Ray's order, for error messages."""
    return f"${TOKEN_VARIABLE}, ${TOKEN_PATH_VARIABLE}, {default_token_path()}"


def find_token() -> ClusterToken | None:
    """The token Ray itself would use: $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH
    names, else ~/.ray/auth_token; None when none of them holds one."""
    if value := os.environ.get(TOKEN_VARIABLE, "").strip():
        return ClusterToken(value, f"${TOKEN_VARIABLE}")
    if named := os.environ.get(TOKEN_PATH_VARIABLE):
        return _token_in(Path(named).expanduser(), f"${TOKEN_PATH_VARIABLE}={named}")
    return _token_in(default_token_path(), str(default_token_path()))


def _token_in(path: Path, source: str) -> ClusterToken | None:
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return ClusterToken(value, source) if value else None

"""How a source proves who CHM is: the headers it sends, and the secrets to hide.

Each platform authenticates its own way (contract: Ingestion; issue 7):

- ``Authorization: Bearer <token>``: the generic feed, Databricks, ADF,
  GitHub, Prefect, and Airflow with a ready-made token;
- another scheme or header: dbt Cloud's ``Authorization: Token <token>``,
  Dagster+'s ``Dagster-Cloud-Api-Token: <token>``;
- HTTP basic auth: Airflow 2's stable API (``/api/v1``);
- a token exchange: Airflow 3 (``/api/v2``) issues a JWT from
  ``POST /auth/token`` with a username and password; the client asks for one
  before its first request and again once when the source answers 401 (the
  JWT expired).

Every secret value (token, password, the basic-auth string, an exchanged
token) is listed in ``secrets`` so that the client removes it from anything
it logs, stores or returns.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenExchange:
    """``POST url`` with the JSON ``body``; the answer's ``token_key`` is a bearer token."""

    url: str
    body: dict[str, str]
    token_key: str = "access_token"  # noqa: S105 (a JSON key, not a secret)


@dataclass(frozen=True)
class Credentials:
    headers: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    exchange: TokenExchange | None = None

    @classmethod
    def none(cls) -> Credentials:
        return cls()

    @classmethod
    def header(cls, name: str, token: str, scheme: str | None = None) -> Credentials:
        """``name: [scheme ]token``; ``header("Authorization", t, "Bearer")`` is bearer auth."""
        value = f"{scheme} {token}" if scheme else token
        return cls(headers={name: value}, secrets=(token, value))

    @classmethod
    def bearer(cls, token: str) -> Credentials:
        return cls.header("Authorization", token, "Bearer")

    @classmethod
    def basic(cls, username: str, password: str) -> Credentials:
        encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
        return cls(headers={"Authorization": f"Basic {encoded}"}, secrets=(password, encoded))

    @classmethod
    def exchanged(cls, exchange: TokenExchange, secrets: tuple[str, ...]) -> Credentials:
        return cls(secrets=secrets, exchange=exchange)

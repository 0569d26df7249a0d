"""Every knob of quotad, each a ``QUOTAD_*`` environment variable with a safe default."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from quotad.domain import keys


class Settings(BaseSettings):
    """Settings read from the environment (and ``.env``); command-line flags override them."""

    model_config = SettingsConfigDict(env_prefix="QUOTAD_", env_file=".env", extra="ignore")

    store_url: str = Field(
        "sqlite:///./quotad.db",
        description=(
            "Where records and counters live: sqlite:///path, postgresql://…, "
            "redis://…?records=<SQL URL>, redis+cluster://…, memory://."
        ),
    )
    on_store_error: Literal["fail-closed", "fail-open"] = Field(
        "fail-closed",
        description=(
            "When the store cannot be reached, verify answers 503 (fail-closed) or allows "
            "the call uncounted (fail-open; counted in a metric and logged)."
        ),
    )
    record_cache_seconds: float = Field(
        2.0,
        ge=0,
        description=(
            "How long a node caches services, plans, accounts and keys for verify; a change "
            "made on another node (a revocation, say) takes effect here within this. 0: off."
        ),
    )
    store_timeout_ms: int = Field(
        800,
        ge=0,
        description=(
            "Verify gives up on a store that has not answered by then (time queued behind "
            "other requests counts) and applies on_store_error; the call is never charged "
            "later. 0: wait as long as the drivers do."
        ),
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Operator token; when unset one is generated on first start and printed once.",
    )
    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(8080, ge=0, le=65535, description="Port the HTTP server binds.")
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description=(
            "When set, `quotad serve` also serves Envoy's rate limit gRPC API on this port "
            "(at the same host; needs the `envoy` extra). No authentication: only the "
            "gateway should reach it."
        ),
    )
    key_prefix: str = Field("qd", description="Prefix of new API keys.")
    rate_limit_per_second: float = Field(
        10.0, ge=0, description="Customer endpoints: requests per second refilled per key."
    )
    rate_limit_burst: int = Field(
        20, ge=1, description="Customer endpoints: requests a key may make at once."
    )
    auth_failures_per_minute: int = Field(
        60,
        ge=0,
        description="Failed authentications a client (IP) may make per minute before 429 (0: off).",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated IPs or CIDR networks of the proxies in front of quotad whose "
            "X-Forwarded-For / X-Forwarded-Proto are believed. Empty (the default): the "
            "connection's peer address is the client, whatever the headers say."
        ),
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Bodies larger than this are refused with 413."
    )
    max_connections: int = Field(
        4096,
        ge=8,
        description=(
            "Connections one `quotad serve` process holds open; a new one past this closes "
            "the longest-idle connection, or gets 503 when none is idle. Lowered at start to "
            "fit the open-file limit (whose soft limit is first raised to the hard one)."
        ),
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description=(
            "A request head must be complete this long after the connection opens (or after "
            "its first byte, on a kept-alive connection); else 408, or a plain close if "
            "nothing arrived."
        ),
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="A request body must be complete this long after its head; else 408.",
    )
    keep_alive_timeout_seconds: int = Field(
        5,
        ge=1,
        description=(
            "An idle kept-alive connection is closed after this; behind a load balancer, set "
            "it above the balancer's own idle timeout."
        ),
    )
    idempotency_ttl_seconds: int = Field(
        86_400, ge=60, description="How long an Idempotency-Key keeps its first answer."
    )
    webhook_allow_private: bool = Field(
        False,
        description="Allow webhook endpoints on private, link-local or loopback addresses "
        "(refused by default, so an operator token cannot probe the internal network).",
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="How long a webhook receiver has to answer 2xx."
    )
    webhook_poll_seconds: float = Field(
        1.0, gt=0, le=60, description="How often each node looks for webhook deliveries due."
    )
    reservation_sweep_seconds: float = Field(
        1.0, gt=0, le=60, description="How often each node gives back reservations past their TTL."
    )
    key_expiring_days: int = Field(
        7, ge=1, le=365, description="key.expiring is sent this many days before a key expires."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: JSON unless stderr is a terminal."
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_shape(cls, value: list[str]) -> list[str]:
        # A typo must not pass silently (uvicorn would take it for a host name), and a
        # network with host bits set is normalised, as uvicorn parses networks strictly.
        normalised = []
        for item in value:
            try:
                parsed = (
                    ipaddress.ip_network(item, strict=False)
                    if "/" in item
                    else ipaddress.ip_address(item)
                )
            except ValueError:
                msg = f"trusted_proxies: {item!r} is not an IP address or CIDR network"
                raise ValueError(msg) from None
            normalised.append(str(parsed))
        return normalised

    @field_validator("key_prefix")
    @classmethod
    def _prefix_shape(cls, value: str) -> str:
        if not keys.valid_prefix(value):
            msg = "key_prefix must be a letter followed by up to 15 letters or digits"
            raise ValueError(msg)
        return value

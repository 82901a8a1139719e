"""What confinement each worker host gives its analysis processes, as the workers report it.

Workers write their host's confinement to Redis when they start and before every job (a key per
host that expires an hour after the last report, so a host that is gone stops counting); the
API's ``/readyz`` reads them, because the API's own host may not be where the models run.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

import redis

#: A report outlives the last job or start-up of its host by this long.
REPORT_TTL_S = 3600


@dataclass(frozen=True)
class HostConfinement:
    host: str
    active: bool
    mechanism: str
    reason: str = ""


def _key(prefix: str, host: str) -> str:
    return f"{prefix}:confinement:{host}"


def publish(client: redis.Redis, prefix: str, report: HostConfinement) -> None:
    body = {"active": report.active, "mechanism": report.mechanism, "reason": report.reason}
    client.set(_key(prefix, report.host), json.dumps(body), ex=REPORT_TTL_S)


def this_host() -> str:
    return socket.gethostname()


def reported(client: redis.Redis, prefix: str, limit: int = 1000) -> list[HostConfinement]:
    """The hosts that reported within the last hour (at most ``limit``), sorted by name."""
    found = []
    for key in client.scan_iter(match=_key(prefix, "*"), count=100):
        raw = client.get(key)
        name = key.decode() if isinstance(key, bytes) else str(key)
        try:
            body = json.loads(raw) if raw is not None else None
        except ValueError:
            body = None
        if isinstance(body, dict):
            found.append(
                HostConfinement(
                    host=name.rsplit(":", 1)[-1],
                    active=body.get("active") is True,
                    mechanism=str(body.get("mechanism", "none"))[:200],
                    reason=str(body.get("reason", ""))[:500],
                )
            )
        if len(found) >= limit:
            break
    return sorted(found, key=lambda report: report.host)

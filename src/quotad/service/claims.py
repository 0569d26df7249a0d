"""The Idempotency-Keys of an operator's calls (a usage adjustment, a gauge move): what each
binds to, and the name it is kept under, apart from verify's keys."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from quotad.domain.models import IdempotencyClaim
from quotad.service.context import Context


def operator_claim(
    ctx: Context, kind: str, idempotency_key: str, *request: object
) -> IdempotencyClaim:
    """An operator call's claim: the same ``request`` (its parts, in order) under the key.

    Kept as ``"<kind> <digest>"``: the space keeps it apart from verify's keys (which never
    hold one), and the digest lets any key of up to 255 characters fit the stores' column.
    """
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return IdempotencyClaim(
        f"{kind} {digest}",
        hashlib.sha256("\n".join(str(part) for part in request).encode()).hexdigest(),
        ctx.clock.now() + timedelta(seconds=ctx.settings.idempotency_ttl_seconds),
    )

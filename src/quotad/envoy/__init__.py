"""Envoy's global rate limit service (``envoy.service.ratelimit.v3``) over quotad's verify.

Served by ``quotad serve --grpc-port`` (``QUOTAD_GRPC_PORT``) beside the HTTP API, so that
Envoy, Istio or any gateway speaking this API enforces quotad's quotas; how a request is
read and answered is in ``quotad.envoy.ratelimit``. Importing this package imports gRPC
(the ``envoy`` extra): ``quotad serve`` does so only when the port is set.
"""

from quotad.envoy.ratelimit import RateLimitService
from quotad.envoy.server import serve_beside, start

__all__ = ["RateLimitService", "serve_beside", "start"]

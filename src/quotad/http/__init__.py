"""Framework-free HTTP pieces every entry point shares; nothing here imports FastAPI or
Starlette, so the API, the dashboard and the ASGI middleware (``quotad.asgi``) stand on
them alike.

``types`` (the ASGI types), ``ids`` (request ids and the echoed headers), ``headers``
(reading a request's headers and the checks before any route), ``errors`` (the one
renderer of the contract's error answers), ``quota`` (the one builder of the quota
headers), ``verify_body`` (the verify body parser), ``middleware`` (the app-wide
``RequestContext`` and the API's ``JsonBodyGuard``), ``views`` (records as the operator
API answers them; the CLI's local commands print the same), ``credit_views`` and
``webhook_views`` (credits; webhooks, deliveries and alert events, likewise).
"""

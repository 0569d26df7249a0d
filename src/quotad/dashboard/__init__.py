"""The web UI: the operator dashboard (``/dashboard``) and the customer portal (``/portal``).

Its own Starlette app (``create_app``), mounted beside the API (``Mounted``): server-rendered
HTML (Jinja2 templates and inline SVG charts shipped in this package, no CDN), plain
url-encoded forms with a little optional JavaScript, its own error pages. None of it is
part of the API's OpenAPI document, and the API's JSON body checks do not apply to it.
"""

from __future__ import annotations

from quotad.dashboard.app import AREAS, Mounted, create_app, in_areas

__all__ = ["AREAS", "Mounted", "create_app", "in_areas"]

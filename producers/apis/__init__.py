"""One module per compatible API shape: request in, ``Parsed`` or ``Rejection`` out.

Every module exposes ``ROUTES`` (method, path, parser, error vocabulary);
:data:`ALL_ROUTES` is what the ASGI app mounts.
"""

from __future__ import annotations

from producers.apis import native, plausible, vemetric, vero, vibefollow, vtcdn
from producers.apis.base import Route

ALL_ROUTES: tuple[Route, ...] = (
    *native.ROUTES,
    *vemetric.ROUTES,
    *vero.ROUTES,
    *vtcdn.ROUTES,
    *plausible.ROUTES,
    *vibefollow.ROUTES,
)

__all__ = ["ALL_ROUTES", "Route"]

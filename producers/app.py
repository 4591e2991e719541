"""The ASGI application of the endpoint: the dispatcher over every API's routes
(``producers.dispatch``, ``producers.handlers``) and the operations app
(``producers.operations``), for an ``Endpoint`` (``producers.endpoint``).
"""

from __future__ import annotations

from producers.apis import ALL_ROUTES
from producers.dispatch import IngestDispatcher
from producers.endpoint import Endpoint
from producers.handlers import RouteHandler
from producers.operations import operations_app


def create_app(endpoint: Endpoint) -> IngestDispatcher:
    """The ASGI app of an endpoint; its lifespan starts and closes the publisher."""
    server = endpoint.settings.server
    handlers = {(r.method, r.path): RouteHandler(r, endpoint) for r in ALL_ROUTES}
    return IngestDispatcher(
        handlers,
        operations_app(endpoint),
        endpoint.metrics,
        server.cors_origins,
        server.access_log,
        endpoint.limits,
        server.retry_after_s,
    )

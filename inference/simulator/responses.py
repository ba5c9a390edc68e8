"""ASGI responses for injected faults, which no well-behaved response class can produce."""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class SimulatedCrash(Exception):
    """Raised to make the server drop a connection mid-response.

    Once the response has started, the ASGI server can only react to an exception by
    closing the connection, which is exactly the broken stream a dying vLLM worker leaves
    behind. `__main__` keeps the resulting traceback out of the log.
    """


class HangResponse(Response):
    """Send nothing, not even a status line, until the client goes away."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


class BrokenResponse(Response):
    """Start a JSON response, send part of its body, then drop the connection."""

    def __init__(self, body: bytes) -> None:
        super().__init__(body, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Content-Length promises the whole body, so the client knows it was cut short.
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        half = self.body[: len(self.body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        raise SimulatedCrash("simulated fault: connection dropped mid-response")

"""Run an ASGI app on a real loopback port for the duration of a test."""

import contextlib
import threading
import time

from tests.ports import free_port


@contextlib.contextmanager
def serve(app, port: int | None = None):
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def capturing_app(path: str = "/hook", reply=None):
    """A webhook/backend stand-in that records the JSON bodies POSTed to ``path``: (app, received)."""
    from fastapi import FastAPI, Request

    received = []
    app = FastAPI()

    @app.post(path)
    async def capture(request: Request):
        received.append(await request.json())
        return {"ok": True} if reply is None else reply

    return app, received

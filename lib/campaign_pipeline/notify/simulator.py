"""A local SMS gateway for the tests, the demo and the benchmark: a real HTTP server on 127.0.0.1.

It speaks the gateway's contract (`POST /messages`, JSON `{to, text, message_id, group_id,
metadata}`, `Idempotency-Key` header, bearer token) and records what a test needs to know: every
`Idempotency-Key` it saw and how often, how often each was accepted (2xx), and the highest number
of requests it was serving at once. `script(message_id, [(status, retry_after, delay), ...])`
makes it answer that message's next requests with those statuses (e.g. 429 with `Retry-After`,
500, or a 200 slower than the client's timeout); everything else is accepted after `latency`
seconds. Like a real gateway that honours idempotency keys, it delivers each key once: a repeated
key is answered 200 with the first provider id, and `delivered` counts each key once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: hundreds of clients connect at once


class GatewaySimulator:
    def __init__(self, latency: float = 0.0, token: str | None = None, port: int = 0):
        self.latency = latency
        self.token = token
        self.seen: Counter[str] = Counter()  # requests per Idempotency-Key
        self.accepted: Counter[str] = Counter()  # 2xx answers per key
        self.delivered: dict[str, str] = {}  # key → provider id (first acceptance)
        self.bodies: dict[str, dict] = {}
        self.max_concurrent = 0
        self._concurrent = 0
        self._scripts: dict[str, list[tuple[int, float | None, float]]] = defaultdict(list)
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, message_id: str, answers: list[tuple[int, float | None, float]]) -> None:
        """Answer the next requests for `message_id` with (status, Retry-After seconds, delay)."""
        with self._lock:
            self._scripts[message_id].extend(answers)

    def start(self) -> GatewaySimulator:
        self._thread = threading.Thread(target=self._server.serve_forever, name="gateway-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> GatewaySimulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _handler(self):
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle's algorithm on, the body waits for
            # the client's delayed ACK (~40 ms a request on Linux) and the gateway crawls.
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:  # quiet
                pass

            def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/messages":
                    return self._reply(404, {"error": "not found"})
                if sim.token and self.headers.get("Authorization") != f"Bearer {sim.token}":
                    return self._reply(401, {"error": "bad token"})
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._reply(400, {"error": "body is not JSON"})
                key = self.headers.get("Idempotency-Key") or ""
                if not key or not body.get("to") or not body.get("text"):
                    return self._reply(422, {"error": "Idempotency-Key, to and text are required"})
                with sim._lock:
                    sim._concurrent += 1
                    sim.max_concurrent = max(sim.max_concurrent, sim._concurrent)
                    sim.seen[key] += 1
                    sim.bodies[key] = body
                    planned = sim._scripts[key].pop(0) if sim._scripts.get(key) else None
                try:
                    status, retry_after, delay = planned or (200, None, sim.latency)
                    if delay:
                        time.sleep(delay)
                    if 200 <= status < 300:
                        with sim._lock:
                            sim.accepted[key] += 1
                            provider_id = sim.delivered.setdefault(key, f"sim-{len(sim.delivered) + 1}")
                        return self._reply(status, {"id": provider_id})
                    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
                    return self._reply(status, {"error": f"simulated {status} for {body.get('to')}"}, headers)
                finally:
                    with sim._lock:
                        sim._concurrent -= 1

        return Handler


class MailWorker:
    """A stand-in for the email service (the demo's): takes the emails off the local queue as they
    arrive, counting them and the distinct `message_id`s in their bodies. moto's SQS walks every
    message a queue holds on each send and receive, so a queue nobody drains gets slower with every
    email; drained by a few threads it stays near empty and as fast as the first send."""

    def __init__(self, endpoint: str, queue_url: str, threads: int = 3):
        import threading

        import boto3

        self._client = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
        self._queue = queue_url
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"demo-mail-worker-{i}", daemon=True) for i in range(threads)
        ]
        self._ids: set[str] = set()
        self.received = 0

    @property
    def distinct(self) -> int:
        return len(self._ids)

    def _take(self, wait: int) -> int:
        import json

        got = self._client.receive_message(QueueUrl=self._queue, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
        messages = got.get("Messages", [])
        if messages:
            self._client.delete_message_batch(
                QueueUrl=self._queue,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
            with self._lock:
                self.received += len(messages)
                self._ids.update(json.loads(m["Body"]).get("message_id", "") for m in messages)
        return len(messages)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._take(wait=1)
        while self._take(wait=0):  # what arrived after the last wait
            pass

    def __enter__(self) -> MailWorker:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

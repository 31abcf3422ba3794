"""A local SMS gateway for the tests, the demo and the benchmark: a real HTTP server on 127.0.0.1.

It speaks the gateway's contract (`POST /messages`, JSON `{to, text, message_id, group_id,
metadata}`, `Idempotency-Key` header, bearer token) and records what a test needs to know: every
`Idempotency-Key` it saw and how often, which runs sent it (`X-Sender-Run`), how often each was
accepted (2xx), when each request arrived (`busiest_second`) and the highest number of requests it
was serving at once. `script(message_id, [(status, retry_after, delay), ...])`
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
        self.runs: dict[str, set[str]] = defaultdict(set)  # key → the `X-Sender-Run`s that sent it
        self.per_run: Counter[str] = Counter()  # requests per `X-Sender-Run`
        self.starts: list[float] = []  # arrival time (time.monotonic) of every request, in order
        self.max_concurrent = 0
        self.echo_text = False  # errors quote the message's text (as some gateways do)
        self._concurrent = 0
        self._scripts: dict[str, list[tuple[int, float | None, float]]] = defaultdict(list)
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def busiest_second(self) -> int:
        """The most requests that arrived within any one second (a sliding window over `starts`)."""
        with self._lock:
            starts = sorted(self.starts)
        best, first = 0, 0
        for last, t in enumerate(starts):
            while t - starts[first] >= 1.0:
                first += 1
            best = max(best, last - first + 1)
        return best

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
                arrived = time.monotonic()
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
                    sim.starts.append(arrived)
                    sim.runs[key].add(self.headers.get("X-Sender-Run") or "")
                    sim.per_run[self.headers.get("X-Sender-Run") or ""] += 1
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
                    error = f"simulated {status} for {body.get('to')}"
                    if sim.echo_text:
                        error += f": {body.get('text')}"
                    return self._reply(status, {"error": error}, headers)
                finally:
                    with sim._lock:
                        sim._concurrent -= 1

        return Handler


class MailWorker:
    """A stand-in for the email service (the demo's): takes the emails off the local queue as they
    arrive, counting them and the distinct `message_id`s in their bodies. moto's SQS walks every
    message a queue holds on each send and receive, so a queue nobody drains gets slower with every
    email; drained by a few threads it stays near empty and as fast as the first send."""

    WAKE_UP = "mail worker: stop waiting"  # not an email: neither received nor counted

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
            emails = [m for m in messages if m["Body"] != self.WAKE_UP]
            with self._lock:
                self.received += len(emails)
                self._ids.update(json.loads(m["Body"]).get("message_id", "") for m in emails)
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
        # A thread waiting on an empty queue would wait out its second: one wake-up each ends the wait.
        self._client.send_message_batch(
            QueueUrl=self._queue,
            Entries=[{"Id": str(i), "MessageBody": self.WAKE_UP} for i in range(len(self._threads))],
        )
        for t in self._threads:
            t.join()


class LocalServices:
    """The demo's stand-ins for the outside world, in a process of their own: the SMS gateway
    simulator, a local SQS (a moto server) with one queue, and a `MailWorker` draining it.

    Run in the driver's interpreter they would share its one lock with every HTTP request the
    sending tasks make, with the Spark client and with the commit thread; in their own process
    (`python -m campaign_pipeline.demo.services`, spoken to in JSON lines on its stdin and
    stdout) they answer as a real gateway and queue would, from outside the job. `gateway_url`,
    `sqs_endpoint` and `queue_url` are known once entered; `mail_counts()` stops the mail worker
    (after what is on the queue) and returns (emails received, distinct message ids)."""

    def __init__(self, queue_name: str = "demo-emails", timeout: float = 60.0, token: str | None = None):
        self.queue_name = queue_name
        self.token = token  # the bearer token the gateway simulator requires, if any
        self.timeout = timeout
        self.gateway_url = self.sqs_endpoint = self.queue_url = ""
        self._process = None

    def __enter__(self) -> LocalServices:
        import os
        import subprocess
        import sys

        self._process = subprocess.Popen(
            [sys.executable, "-m", "campaign_pipeline.demo.services", self.queue_name],
            env={**os.environ, "SIMULATOR_TOKEN": self.token or ""},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            message = self._receive()
            if message.get("failed"):
                raise RuntimeError(f"the demo's local gateway and queue did not start: {message['failed']}")
        except BaseException:
            self.__exit__()
            raise
        self.gateway_url, self.sqs_endpoint, self.queue_url = message["gateway"], message["sqs"], message["queue"]
        return self

    def _receive(self) -> dict:
        import json
        import selectors

        with selectors.DefaultSelector() as wait:
            wait.register(self._process.stdout, selectors.EVENT_READ)
            if not wait.select(self.timeout):
                raise RuntimeError(f"the demo's local gateway and queue did not answer within {self.timeout:g} s")
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the demo's local gateway and queue stopped (exit code {self._process.wait()})")
        return json.loads(line)

    def _send(self, command: str) -> None:
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()

    def mail_counts(self) -> tuple[int, int]:
        self._send("mail counts")
        answer = self._receive()
        return answer["received"], answer["distinct"]

    def __exit__(self, *exc) -> None:
        import subprocess

        try:
            self._send("stop")
            self._process.stdin.close()
            self._process.wait(10)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            self._process.kill()
            self._process.wait(5)


def _quicker_moto_receives() -> None:
    """moto checks each message it hands out against the queue's retention period by computing all
    of the queue's attributes, three of which walk every message the queue holds: a receive of 10
    from a queue of 1,000 takes ~0.4 s, the mail worker falls behind the sender, and the queue (and
    with it every send, which walks it once) slows down without end. The same check, reading the
    one attribute it needs. Only in the demo's own process; the tests' moto server is untouched."""
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    def is_message_valid_based_on_retention_period(self, queue_name, message) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return retention + message.sent_timestamp / 1000 > unix_time()

    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period


def _approximate_counts_for_a_second() -> None:
    """moto also computes every queue attribute for each message it accepts (to read one flag), and
    three attributes, the approximate message counts, walk the whole queue: with 700 messages
    queued a batch of 10 took 127 ms, 28 ms at an empty queue. Each count is now
    recomputed at most once a second per queue; SQS's own are approximate and lag too. Only in
    the demo's own process."""
    import time

    from moto.sqs.models import Queue

    for name in (
        "approximate_number_of_messages",
        "approximate_number_of_messages_delayed",
        "approximate_number_of_messages_not_visible",
    ):

        def cached(queue, count=getattr(Queue, name).fget, slot=f"_counted_{name}"):
            now = time.monotonic()
            at, value = queue.__dict__.get(slot, (None, 0))
            if at is None or now - at >= 1.0:
                at, value = now, count(queue)
                queue.__dict__[slot] = (at, value)
            return value

        setattr(Queue, name, property(cached))


def _deletes_under_the_queue_lock() -> None:
    """moto deletes a message by rebuilding the queue's message list without the lock its sends
    append under: an email sent while the mail worker deletes another can vanish (a fresh-clone
    test run lost one batch of 10). Deletes take that lock here. Only in the demo's own process."""
    from moto.sqs.models import Queue

    delete = Queue.delete_message

    def delete_message(queue, receipt_handle: str) -> None:
        with queue._messages_lock:
            delete(queue, receipt_handle)

    Queue.delete_message = delete_message


def _serve_local_services(queue_name: str) -> int:
    """`LocalServices`' process: start everything, say where it is, answer until told to stop."""
    import json
    import logging
    import os
    import socket
    import sys

    # moto takes any keys; its clients here need some (this process only).
    os.environ.update({"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo"})

    def say(message: dict) -> None:
        print(json.dumps(message), flush=True)

    try:
        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
        _quicker_moto_receives()
        _approximate_counts_for_a_second()
        _deletes_under_the_queue_lock()
        with socket.socket() as probe:  # a free port for the local SQS
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        sqs = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        sqs.start()
        endpoint = f"http://127.0.0.1:{port}"
        queue = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint).create_queue(QueueName=queue_name)
        gateway = GatewaySimulator(token=os.environ.get("SIMULATOR_TOKEN") or None).start()
        mail = MailWorker(endpoint, queue["QueueUrl"]).__enter__()
    except Exception as e:  # noqa: BLE001 - reported to the parent, which says what failed
        say({"failed": f"{type(e).__name__}: {e}"})
        return 1
    say({"gateway": gateway.url, "sqs": endpoint, "queue": queue["QueueUrl"]})
    try:
        for line in sys.stdin:  # ends when the parent closes our stdin or goes away
            command = line.strip()
            if command == "mail counts":
                mail.__exit__(None, None, None)
                say({"received": mail.received, "distinct": mail.distinct})
            elif command == "stop":
                # Nothing here outlives the process (the queue and the gateway's records are in
                # memory, the parent has its counts): leave at once, as a killed service would,
                # rather than wait on each server's shutdown poll (~1.4 s at the end of the demo).
                sys.stdout.flush()
                os._exit(0)
    finally:
        gateway.stop()
        sqs.stop()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_serve_local_services(sys.argv[1] if len(sys.argv) > 1 else "demo-emails"))

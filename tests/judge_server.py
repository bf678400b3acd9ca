"""A real HTTP judge server on 127.0.0.1 for tests and the throughput benchmark.

It speaks the two API shapes our judges use:

* Anthropic Messages: ``POST /v1/messages`` -> ``{"type": "message", "content": [{"type": "text", ...}], ...}``
* OpenAI chat completions: ``POST /v1/chat/completions`` (also ``/chat/completions``)

The judge text it returns comes from ``responder(item)`` where ``item`` is the text inside the request's
``<prompt>`` tags (our rubric puts the graded prompt there). The default responder answers a valid verdict
whose single attempt scores :func:`expected_score` of the prompt, so tests can check that every grade went
to the right item.

Faults are decided per request by ``faults(item, attempt_no)``, where ``attempt_no`` counts the requests
seen so far for that item (0 for the first). Kinds (:data:`FAULT_KINDS`):

* ``"429"``: status 429 with ``retry-after`` (seconds, :attr:`JudgeServer.retry_after`)
* ``"500"``: status 500 (with ``retry-after`` only if :attr:`JudgeServer.retry_after_5xx` is set)
* ``"slow"``: sleeps :attr:`JudgeServer.slow_s` (past the client timeout) before answering normally
* ``"malformed"``: status 200 with a truncated, invalid JSON body
* ``"no_tags"``: a valid verdict as bare JSON without ``<json>`` tags
* ``"prose"``: judge text with no JSON at all
* ``"400"`` (never drawn by :func:`random_faults` by default): status 400 with :attr:`JudgeServer.error_message`

Every request is recorded in :attr:`JudgeServer.records` (thread-safe), and :attr:`JudgeServer.max_in_flight`
is the largest number of requests handled at once. Run as a script
(``python tests/judge_server.py --latency 0.1``) it serves until killed and prints ``PORT <n>`` first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT_KINDS = ("429", "500", "slow", "malformed", "no_tags", "prose")
_PROMPT_RE = re.compile(r"<prompt>\n?(.*?)\n?</prompt>", re.DOTALL)

FaultPlan = Callable[[str, int], "str | None"]
Responder = Callable[[str, dict], str]


def expected_score(prompt: str) -> int:
    """The score the default responder gives a prompt: a stable function of its text, 0..100."""
    return int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 101


def verdict_json(prompt: str) -> str:
    return json.dumps(
        {"attempts": [{"attempt_text": f"answer to {prompt}", "score": expected_score(prompt)}]}
    )


def default_responder(item: str, body: dict) -> str:
    return f"The response addresses the prompt.\n<json>{verdict_json(item)}</json>"


def random_faults(rate: float, kinds: tuple[str, ...] = FAULT_KINDS, seed: int = 0) -> FaultPlan:
    """A deterministic fault plan: each (item, attempt_no) faults with probability ``rate``, with a kind
    drawn uniformly from ``kinds``; the same arguments always give the same decision."""

    def plan(item: str, attempt_no: int) -> str | None:
        rng = random.Random(f"{seed}|{item}|{attempt_no}")
        return rng.choice(kinds) if rng.random() < rate else None

    return plan


def no_faults(item: str, attempt_no: int) -> str | None:
    return None


@dataclass
class RequestRecord:
    """One request the server received."""

    api: str  # "anthropic" | "openai"
    item: str
    attempt_no: int
    fault: str | None
    t: float
    auth: str  # the credential header's value as received
    body: dict = field(repr=False)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # silence
        pass

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802
        js: JudgeServer = self.server.owner
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        path = self.path.split("?")[0]
        if path.endswith("/v1/messages"):
            api = "anthropic"
        elif path.endswith("/chat/completions"):
            api = "openai"
        else:
            self._send(404, b'{"error": {"message": "not found"}}')
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._send(400, b'{"error": {"message": "bad json"}}')
            return
        item = js.item_of(api, body)
        auth = self.headers.get("x-api-key") or self.headers.get("authorization") or ""
        with js.lock:
            attempt_no = js.attempts_by_item.get(item, 0)
            js.attempts_by_item[item] = attempt_no + 1
            fault = js.faults(item, attempt_no)
            js.records.append(RequestRecord(api, item, attempt_no, fault, time.monotonic(), auth, body))
            js.in_flight += 1
            js.max_in_flight = max(js.max_in_flight, js.in_flight)
        try:
            self._answer(js, api, body, item, fault)
        finally:
            with js.lock:
                js.in_flight -= 1

    def _answer(self, js: JudgeServer, api: str, body: dict, item: str, fault: str | None) -> None:
        if js.latency_s:
            time.sleep(js.latency_s)
        if fault == "429":
            self._send(429, _error(api, "rate_limit_error", "rate limited"), {"retry-after": js.retry_after})
            return
        if fault == "500":
            headers = {"retry-after": js.retry_after_5xx} if js.retry_after_5xx else {}
            self._send(500, _error(api, "api_error", "internal error"), headers)
            return
        if fault == "slow":
            time.sleep(js.slow_s)
        if fault == "malformed":
            self._send(200, b'{"id": "msg_01", "type": "message", "content": [{"type": "text", "te')
            return
        if js.status_override is not None or fault == "400":
            self._send(js.status_override or 400, _error(api, "invalid_request_error", js.error_message))
            return
        if fault == "no_tags":
            text = f"Feedback first. {verdict_json(item)} That is all."
        elif fault == "prose":
            text = "The response is fine, I would give it a high mark."
        else:
            text = js.responder(item, body)
        self._send(200, _reply(api, body, text))


def _error(api: str, kind: str, message: str) -> bytes:
    if api == "anthropic":
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    return json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()


def _reply(api: str, body: dict, text: str) -> bytes:
    if api == "anthropic":
        return json.dumps(
            {
                "id": "msg_local",
                "type": "message",
                "role": "assistant",
                "model": body.get("model", "unknown"),
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 100, "output_tokens": 20},
            }
        ).encode()
    return json.dumps(
        {
            "id": "chatcmpl-local",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "unknown"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
    ).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    owner: JudgeServer


class JudgeServer:
    """A threaded judge server on ``127.0.0.1:<free port>``; use as a context manager.

    ``base_url`` suits ``AsyncAnthropic(base_url=...)``; ``openai_base_url`` (``.../v1``) suits
    ``AsyncOpenAI(base_url=...)``.
    """

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        faults: FaultPlan = no_faults,
        responder: Responder = default_responder,
        retry_after: str = "0.05",
        retry_after_5xx: str | None = None,
        slow_s: float = 1.0,
        status_override: int | None = None,
        error_message: str = "error",
    ) -> None:
        self.latency_s = latency_s
        self.faults = faults
        self.responder = responder
        self.retry_after = retry_after
        self.retry_after_5xx = retry_after_5xx
        self.slow_s = slow_s
        self.status_override = status_override
        self.error_message = error_message
        self.lock = threading.Lock()
        self.records: list[RequestRecord] = []
        self.attempts_by_item: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def n_requests(self) -> int:
        with self.lock:
            return len(self.records)

    @staticmethod
    def item_of(api: str, body: dict) -> str:
        """The graded prompt inside a request (text between ``<prompt>`` tags of the last user message)."""
        messages = body.get("messages") or []
        content = messages[-1].get("content", "") if messages else ""
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        m = _PROMPT_RE.search(content or "")
        return m.group(1) if m else (content or "")

    def start(self) -> JudgeServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added to every response")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    args = parser.parse_args()
    faults = random_faults(args.fault_rate) if args.fault_rate else no_faults
    server = JudgeServer(latency_s=args.latency, faults=faults).start()
    print(f"PORT {server.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

"""A fake OpenAI-compatible teacher on 127.0.0.1, for tests, benchmarks and offline rehearsals.

It answers the project's scoring, correction and judge prompts with well-formed, deterministic
answers (a sentence's score comes from the hash of its text), holds its own --rpm with 429 and
Retry-After, and with --fault-rate injects 500s, timeouts, malformed JSON, truncated bodies and
wrong sentence counts. `GET /stats` counts requests by outcome and how many identical requests
were answered 200 more than once (a client that never pays twice keeps that at 0); `GET /requests`
returns the chat bodies received, last 1000 (what a test checks the prompts on).
Asked for `logprobs`, it returns OpenAI-format token logprobs with a known distribution at
every score (`token_logprobs`), so expected scores can be computed by hand.
The Batch API is there too (`/v1/files`, `/v1/batches`): a batch ends `batch_delay_s` after it
was created, each line answered as the online endpoint answers it and counted in /stats alike.
The model name `no-quota` answers 429 insufficient_quota, as an exhausted account does, and
`judge-first` is a judge with full position bias (it always prefers the rationale shown first).
Reasoning model names (o1, o4-mini, gpt-5 ...) refuse `max_tokens` and `temperature` with 400,
as OpenAI does, and report `reasoning_tokens`. Rate-limit headers come in OpenAI's
(`x-ratelimit-*`) or Anthropic's (`anthropic-ratelimit-*`) spelling: the limit per minute, what
remains of a minute's bucket, and when it is full again; the --rpm it enforces is quantised to
one second's worth, as OpenAI enforces it. `answered_timeouts` requests are answered (and
counted, as a provider bills them) but the answer is never sent: the client's read times out.
Every answer carries an `x-request-id` and names a model snapshot (`<model>-fake-0001`).
Fault modes a test switches on: `faults` (the kinds --fault-rate draws from), `prose` (scores
inside prose with bracketed numbers), `reject` (a request whose text holds a marker gets a
permanent 400 with that error code, online and in batches), `unsupported` (a body naming that
parameter gets 400 unsupported_parameter),
`honour_max_tokens` (an answer longer than max_tokens is cut there, `finish_reason: length`),
`lose_batch_creates` (the first N `POST /batches` create the batch but answer 500),
`refuse_batch_creates` (the first N `POST /batches` answer 400 and create nothing),
`garble_batch_lines` (the first N batch output lines hold an unreadable body) and `echo_key`
(every error message quotes the request's authorization header, as some proxies do); `retry_after`
replaces the Retry-After of its 429s with that text (`inf`, `86400`). `latency_ms` delays
`POST /files` and `POST /batches` too (so overlapping batch commands overlap). Answers are counted
by the request body as JSON with sorted keys, online and in batches alike: `answered_twice`
counts a request paid once online and once in a batch too.
With a `judge` (`--judge arith`, `ares_data/judges.py`) scores and corrections come from a rule
teacher that checks each sentence instead of hashing it; `--profile llm|sparse` (and the rate
options) make it as fallible as an LLM teacher, errors drawn per request
(`ares_data/teacher_profiles.py`). With `log` (`--log FILE`) every chat request and its answer
are appended to FILE as one JSON line (time, status, request, response), so a rehearsal shows
what a client sent and got.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import socket
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .fake_answers import FAULTS, REASONING_TOKENS, answer, token_logprobs
from .teacher.config import REASONING_MODEL
from .teacher.pricing import PrefixCache

if TYPE_CHECKING:
    from .judges import Judge

class FakeTeacher:
    def __init__(self, latency_ms: float = 0.0, rpm: float | None = None, fault_rate: float = 0.0,
                 seed: int = 0, api_key: str | None = None, hang_s: float = 30.0, ratelimit_headers: bool = True,
                 cache_min_tokens: int | None = 0, batch_delay_s: float = 0.0, ratelimit_style: str = "openai",
                 answered_timeouts: int = 0, prose: bool = False, reject: dict[str, str] | None = None,
                 unsupported: str | None = None, honour_max_tokens: bool = False, lose_batch_creates: int = 0,
                 garble_batch_lines: int = 0, refuse_batch_creates: int = 0, faults: tuple[str, ...] = FAULTS,
                 judge: "Judge | None" = None, echo_key: bool = False, retry_after: str | None = None,
                 log: str | Path | None = None):
        self.judge, self.echo_key, self._authorization, self.retry_after = judge, echo_key, "", retry_after
        self.log = None if log is None else open(log, "a", encoding="utf-8")  # open while it serves
        self.latency_s, self.rpm, self.fault_rate, self.seed = latency_ms / 1000, rpm, fault_rate, seed
        self.prose, self.reject, self.unsupported, self.faults = prose, reject or {}, unsupported, faults
        self.honour_max_tokens, self.lose_batch_creates, self.garble_batch_lines = (
            honour_max_tokens, lose_batch_creates, garble_batch_lines)
        self.batch_delay_s, self.refuse_batch_creates = batch_delay_s, refuse_batch_creates
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.api_key, self.hang_s, self.ratelimit_headers = api_key, hang_s, ratelimit_headers
        self.by_status: Counter = Counter()
        self.answered: Counter = Counter()
        self.seen: Counter = Counter()
        self.received: deque[dict[str, Any]] = deque(maxlen=1000)
        # Prompt caching as providers do it: a request's head sent before is reported as cached
        # (None: no cache at all).
        self.cache = None if cache_min_tokens is None else PrefixCache(cache_min_tokens)
        self._capacity = max(1.0, rpm / 60) if rpm else 0.0
        self._tokens, self._at = self._capacity, time.monotonic()
        self._minute = float(rpm or 0)  # the reported bucket: a minute's worth
        self.ratelimit_style, self.answered_timeouts = ratelimit_style, answered_timeouts
        self._requests = 0
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/models", self.models), Route("/stats", self.stats), Route("/requests", self.requests),
            Route("/v1/files", self.upload, methods=["POST"]),
            Route("/v1/files/{file_id}/content", self.file_content),
            Route("/v1/batches", self.create_batch, methods=["POST"]),
            Route("/v1/batches", self.list_batches, methods=["GET"]),
            Route("/v1/batches/{batch_id}", self.get_batch),
        ])

    def _take(self) -> float:
        """0 when a request may pass the --rpm bucket, else the seconds until it could."""
        if not self.rpm:
            return 0.0
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self.rpm / 60)
        self._minute = min(self.rpm, self._minute + (now - self._at) * self.rpm / 60)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            self._minute = max(0.0, self._minute - 1)
            return 0.0
        return (1 - self._tokens) * 60 / self.rpm

    def _fault(self, key: str) -> str | None:
        rng = random.Random(f"{self.seed}:{key}:{self.seen[key]}")
        self.seen[key] += 1
        return rng.choice(self.faults) if rng.random() < self.fault_rate else None

    def _error(self, status: int, message: str, code: str, headers: dict | None = None,
               param: str | None = None) -> JSONResponse:
        self.by_status[str(status)] += 1
        if self.echo_key:
            message += f" (the request was sent with authorization: {self._authorization})"
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error" if status == 400 else code,
                                       "code": code, "param": param}}, status,
                            headers={"x-request-id": self._request_id(), **(headers or {})})

    def _request_id(self) -> str:
        return f"req_fake_{self._requests:06d}"

    def _refusal(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The 400 error body refusing this request (`reject` markers, `unsupported`), if any."""
        if self.unsupported and self.unsupported in body:
            return {"error": {"message": f"Unsupported parameter: '{self.unsupported}' is not supported with "
                                         "this model.", "code": "unsupported_parameter", "param": self.unsupported}}
        text = json.dumps(body.get("messages"))
        for marker, code in self.reject.items():
            if marker in text:
                return {"error": {"message": f"The request was refused ({code}).", "code": code, "param": "messages"}}
        return None

    async def chat(self, request: Request) -> Response:
        response = await self._chat(request)
        if self.log is not None:
            self._write_log(await request.body(), response)
        return response

    def _write_log(self, raw: bytes, response: Response) -> None:
        """One JSON line: the request and the answer, each as JSON when it parses (else its text)."""
        def parsed(data: bytes) -> Any:
            try:
                return json.loads(data)
            except ValueError:
                return data.decode("utf-8", "replace")

        line = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "status": response.status_code, "request": parsed(raw), "response": parsed(bytes(response.body))}
        assert self.log is not None
        self.log.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.log.flush()

    async def _chat(self, request: Request) -> Response:
        self._requests += 1
        self._authorization = request.headers.get("authorization", "")
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Incorrect API key provided.", "invalid_api_key")
        raw = await request.body()
        try:
            body = json.loads(raw)
            if not isinstance(body["messages"], list):
                raise TypeError("messages is not a list")
            self.received.append(body)
        except (ValueError, KeyError, TypeError):
            return self._error(400, "the body is not a chat completion request", "invalid_request_error")
        if body.get("model") == "no-quota":
            return self._error(429, "You exceeded your current quota.", "insufficient_quota")
        refused = self._reasoning_refusal(body)
        if refused:
            return self._error(400, refused, "unsupported_parameter")
        rejected = self._refusal(body)
        if rejected:
            error = rejected["error"]
            return self._error(400, error["message"], error["code"], param=error["param"])
        wait = self._take()
        if wait:
            retry = {"retry-after": self.retry_after} if self.retry_after else {
                "retry-after": str(math.ceil(wait)), "retry-after-ms": str(int(wait * 1000) + 1)}
            return self._error(429, "Rate limit reached.", "rate_limit_exceeded",
                               {**retry, **self._limit_headers(remaining=0, reset_s=wait)})
        key = hashlib.sha256(raw).hexdigest()
        paid = _paid_key(body)
        fault = self._fault(key)
        await asyncio.sleep(self.latency_s)
        answered_late = self.answered_timeouts > 0  # answered and billed, but never sent
        if answered_late:
            self.answered_timeouts -= 1
            self.answered[paid] += 1
        if answered_late or fault == "timeout":
            self.by_status["answered_timeout" if answered_late else "timeout"] += 1
            deadline = time.monotonic() + self.hang_s
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.05)
            return Response(status_code=504)
        if fault == "500":
            return self._error(500, "The server had an error.", "server_error")
        if await request.is_disconnected():
            self.by_status["disconnected"] += 1
            return Response(status_code=499)
        envelope = json.dumps(self._completion(body, len(raw), key, fault))
        if fault == "truncated":
            self.by_status["truncated"] += 1
            return Response(envelope[: len(envelope) // 2], media_type="application/json")
        self.by_status["200"] += 1
        self.answered[paid] += 1
        return Response(envelope, media_type="application/json",
                        headers={"x-request-id": self._request_id(), **self._limit_headers()})

    @staticmethod
    def _reasoning_refusal(body: dict[str, Any]) -> str | None:
        """OpenAI's 400 for a reasoning model sent a parameter it does not take."""
        if not REASONING_MODEL.match(str(body.get("model", ""))):
            return None
        if "max_tokens" in body:
            return "Unsupported parameter: 'max_tokens' is not supported with this model. " \
                   "Use 'max_completion_tokens' instead."
        if "temperature" in body:
            return "Unsupported parameter: 'temperature' is not supported with this model."
        return None

    def _completion(self, body: dict[str, Any], size: int, key: str, fault: str | None) -> dict[str, Any]:
        """The chat completion answering `body` (`size` bytes), as the online and batch endpoints send it."""
        content = answer(body["messages"], fault, str(body.get("model", "")), self.judge)
        if self.prose and content.startswith("{"):
            content = f"Sentence [1] is right, [2] needs care. {content} Scores are on [0, 1]."
        finish = "stop"
        if self.honour_max_tokens and len(content) // 4 > int(body.get("max_tokens") or 1 << 30):
            content, finish = content[: int(body["max_tokens"]) * 4], "length"
        cached = self.cache.read(body) if self.cache else 0
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
        if body.get("logprobs"):
            choice["logprobs"] = {"content": token_logprobs(content, int(body.get("top_logprobs") or 0))}
        model = str(body.get("model", "fake"))
        reasoning = REASONING_TOKENS if REASONING_MODEL.match(model) else 0
        out = max(1, len(content) // 4) + reasoning
        return {
            "id": f"chatcmpl-fake-{key[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": f"{model}-fake-0001",
            "choices": [choice],
            "usage": {"prompt_tokens": size // 4, "completion_tokens": out, "total_tokens": size // 4 + out,
                      "prompt_tokens_details": {"cached_tokens": cached},
                      "completion_tokens_details": {"reasoning_tokens": reasoning}},
        }

    # -- Batch API: files in memory, a batch ends `batch_delay_s` after it was created ------------

    async def upload(self, request: Request) -> JSONResponse:
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str) or form.get("purpose") != "batch":
            return self._error(400, "expected a file and purpose=batch", "invalid_request_error")
        await asyncio.sleep(self.latency_s)
        return JSONResponse(self._file(await upload.read(), upload.filename or "upload.jsonl"))

    def _file(self, data: bytes, name: str) -> dict[str, Any]:
        file_id = f"file-fake-{len(self.files)}"
        self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data), "filename": name, "purpose": "batch",
                "created_at": int(time.time())}

    async def file_content(self, request: Request) -> Response:
        data = self.files.get(request.path_params["file_id"])
        if data is None:
            return self._error(404, "No such file.", "not_found")
        return Response(data, media_type="application/jsonl")

    async def create_batch(self, request: Request) -> JSONResponse:
        body = await request.json()
        data = self.files.get(body.get("input_file_id"))
        if data is None or body.get("endpoint") != "/v1/chat/completions":
            return self._error(400, "unknown input_file_id or endpoint", "invalid_request_error")
        if self.refuse_batch_creates > 0:
            self.refuse_batch_creates -= 1
            return self._error(400, "The batch input file is invalid.", "invalid_request_error")
        await asyncio.sleep(self.latency_s)
        batch_id = f"batch_fake_{len(self.batches)}"
        lose = self.lose_batch_creates > 0
        self.lose_batch_creates -= lose
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window", "24h"), "status": "validating",
            "created_at": int(time.time()), "output_file_id": None, "error_file_id": None,
            "request_counts": {"total": len(data.splitlines()), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"), "due": time.monotonic() + self.batch_delay_s}
        if lose:  # created, but the answer is lost on the way
            return self._error(500, "The server had an error.", "server_error")
        return JSONResponse(self._public(self.batches[batch_id]))

    async def list_batches(self, request: Request) -> JSONResponse:
        """Newest first, `limit` at a time after the batch id `after`."""
        newest = list(reversed(self.batches.values()))
        after = request.query_params.get("after")
        if after:
            newest = newest[[b["id"] for b in newest].index(after) + 1:]
        limit = int(request.query_params.get("limit", 20))
        return JSONResponse({"object": "list", "data": [self._public(b) for b in newest[:limit]],
                             "has_more": len(newest) > limit})

    async def get_batch(self, request: Request) -> JSONResponse:
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None:
            return self._error(404, "No such batch.", "not_found")
        if batch["status"] != "completed":
            if time.monotonic() >= batch["due"]:
                self._finish(batch)
            else:
                batch["status"] = "in_progress"
        return JSONResponse(self._public(batch))

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if k != "due"}

    def _finish(self, batch: dict[str, Any]) -> None:
        """Answer every line as the online endpoint would; 500s, timeouts and truncations (the
        fault draws) and `no-quota` go to the error file."""
        output, errors = [], []
        for n, line in enumerate(self.files[batch["input_file_id"]].decode().splitlines()):
            item = json.loads(line)
            body = item["body"]
            key = _paid_key(body)
            fault = self._fault(key)
            base = {"id": f"batch_req_{batch['id']}_{n}", "custom_id": item["custom_id"]}
            refused = self._refusal(body)
            if refused:
                self.by_status["batch_400"] += 1
                output.append({**base, "error": None, "response": {"status_code": 400, "body": refused}})
                continue
            if len(output) < self.garble_batch_lines:
                output.append({**base, "error": None, "response": {"status_code": 200, "body": {"choices": []}}})
                continue
            if fault in ("500", "timeout", "truncated") or body.get("model") == "no-quota":
                self.by_status["batch_error"] += 1
                errors.append({**base, "response": None,
                               "error": {"code": "server_error", "message": "The server had an error."}})
                continue
            self.by_status["200"] += 1
            self.answered[key] += 1
            output.append({**base, "error": None, "response": {
                "status_code": 200, "request_id": f"req_{key[:12]}",
                "body": self._completion(body, len(json.dumps(body)), key, fault)}})
        name = batch["id"]
        lines = lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode()  # noqa: E731
        batch["output_file_id"] = self._file(lines(output), f"{name}_output.jsonl")["id"] if output else None
        batch["error_file_id"] = self._file(lines(errors), f"{name}_error.jsonl")["id"] if errors else None
        batch["request_counts"].update(completed=len(output), failed=len(errors))
        batch.update(status="completed", completed_at=int(time.time()))

    def _limit_headers(self, remaining: float | None = None, reset_s: float | None = None) -> dict[str, str]:
        """Rate-limit headers in OpenAI's or Anthropic's spelling: the limit per minute, what is left
        of a minute's bucket, and when it is full again (`remaining`/`reset_s` override, for a 429)."""
        if not (self.rpm and self.ratelimit_headers):
            return {}
        left = self._minute if remaining is None else remaining
        reset = (self.rpm - left) * 60 / self.rpm if reset_s is None else reset_s
        if self.ratelimit_style == "anthropic":
            at = datetime.fromtimestamp(time.time() + reset, timezone.utc).isoformat(timespec="milliseconds")
            return {"anthropic-ratelimit-requests-limit": str(int(self.rpm)),
                    "anthropic-ratelimit-requests-remaining": str(int(left)),
                    "anthropic-ratelimit-requests-reset": at.replace("+00:00", "Z")}
        return {"x-ratelimit-limit-requests": str(int(self.rpm)), "x-ratelimit-remaining-requests": str(int(left)),
                "x-ratelimit-reset-requests": f"{int(reset * 1000) + 1}ms"}

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "ares"}]})

    def snapshot(self) -> dict[str, Any]:
        return {"requests": sum(self.by_status.values()), "by_status": dict(self.by_status),
                "answered": sum(self.answered.values()),
                "answered_twice": sum(1 for n in self.answered.values() if n > 1), "batches": len(self.batches)}

    async def stats(self, request: Request) -> JSONResponse:
        return JSONResponse(self.snapshot())

    async def requests(self, request: Request) -> JSONResponse:
        return JSONResponse(list(self.received))


def _paid_key(body: dict[str, Any]) -> str:
    """What `answered` counts by: the request as JSON with sorted keys (online and in a batch alike)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _server(teacher: FakeTeacher):
    import uvicorn

    config = uvicorn.Config(teacher.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1,
                            access_log=False)
    return uvicorn.Server(config)


@contextmanager
def serve_in_thread(port: int = 0, **options: Any) -> Iterator[str]:
    """Run a fake teacher in a background thread; yields its base URL (`http://127.0.0.1:PORT/v1`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = _server(FakeTeacher(**options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def serve(port: int, **options: Any) -> None:
    """Serve in the foreground until interrupted (`ares fake-teacher`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    _server(FakeTeacher(**options)).run(sockets=[sock])

"""A real, deliberately unreliable OpenAI-compatible server on 127.0.0.1, for fault-injection tests.

It speaks just enough HTTP/1.1 over raw asyncio sockets to misbehave in ways a
framework would not allow: drop the connection, answer 500 / 429, stall past the
client's timeout, send a truncated body, or send invalid JSON. Faults are
deterministic and bounded: each distinct request body gets at most
``faulty_attempts`` faulty answers (the kinds cycle through ``faults``), then an
honest one, so every retry loop terminates.

Generation is scripted like :class:`ttscale.backends.fake.FakeBackend`: whitespace
words are tokens, the text reads ``"... The answer is X."``. The server counts the
completion tokens of every answer it delivered in full, so tests compare the
client's totals with the server's own counters.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

FAULTS = ("drop", "500", "429", "stall", "truncated", "invalid", "shape")


@dataclass
class FakeOpenAIServer:
    faults: Sequence[str] = ()
    faulty_attempts: int = 2
    honour_n: bool = True
    logprobs: bool = True
    usage_first_choice_only: bool = False
    """Mimic llama-server's n > 1 usage: completion_tokens of one choice only."""
    answers: dict[str, float] = field(default_factory=lambda: {"42": 0.6, "41": 0.3, "7": 0.1})
    filler: int = 6
    stall_s: float = 3.0
    reject_logprobs: bool = False
    """Answer 400 to any request asking for log-probs (a server without the feature)."""
    port: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    delivered_completion_tokens: int = 0
    delivered_prompt_tokens: int = 0
    delivered_choices: int = 0
    bodies: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)  # stalled handlers: cancel them so the loop closes cleanly
        for t in tasks:
            t.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    # ---- HTTP plumbing ---------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            await self._route(method, path, body, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, payload: bytes, extra: str = "",
                    declared: int | None = None) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
                  500: "Internal Server Error"}.get(status, "X")
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {declared if declared is not None else len(payload)}\r\n{extra}"
                     "Connection: close\r\n\r\n".encode() + payload)
        await writer.drain()

    async def _route(self, method: str, path: str, raw: bytes, writer: asyncio.StreamWriter) -> None:
        data = json.loads(raw or b"{}")
        if path == "/tokenize":
            await self._send(writer, 200, json.dumps({"tokens": [0] * self._count(data["content"])}).encode())
            return
        if path == "/metrics":
            text = f"fake:tokens_predicted_total {self.delivered_completion_tokens}\n"
            await self._send(writer, 200, text.encode())
            return
        if path not in ("/v1/completions", "/v1/chat/completions"):
            await self._send(writer, 404, b'{"error": {"message": "not found"}}')
            return
        with self._lock:
            self.requests += 1
            self.bodies.append(data)
            key = hashlib.sha256(raw).hexdigest()
            self._attempts[key] += 1
            attempt = self._attempts[key]
        if self.reject_logprobs and data.get("logprobs"):
            await self._send(writer, 400, b'{"error": {"message": "logprobs is not supported by this server"}}')
            return
        fault = None
        if self.faults and attempt <= self.faulty_attempts:
            fault = self.faults[(int(key[:8], 16) + attempt) % len(self.faults)]
        if fault:
            with self._lock:
                self.injected[fault] += 1
        if fault == "drop":
            return
        if fault == "500":
            await self._send(writer, 500, b'{"error": {"message": "boom"}}')
            return
        if fault == "429":
            await self._send(writer, 429, b'{"error": {"message": "slow down"}}', "Retry-After: 0\r\n")
            return
        if fault == "stall":
            await asyncio.sleep(self.stall_s)
            return
        if fault == "invalid":
            await self._send(writer, 200, b'{"choices": [{"text": "The answ')
            return
        if fault == "shape":
            await self._send(writer, 200, b'{"object": "text_completion"}')
            return
        response, completion_tokens, prompt_tokens = self._complete(data, chat=path.endswith("chat/completions"))
        payload = json.dumps(response).encode()
        if fault == "truncated":
            await self._send(writer, 200, payload[: len(payload) // 2], declared=len(payload))
            return
        await self._send(writer, 200, payload)
        with self._lock:
            self.delivered_completion_tokens += completion_tokens
            self.delivered_prompt_tokens += prompt_tokens
            self.delivered_choices += len(response["choices"])

    # ---- scripted generation ---------------------------------------------------------------

    @staticmethod
    def _count(text: str) -> int:
        return len(text.split()) + 1  # + BOS

    def _complete(self, data: dict, chat: bool) -> tuple[dict, int, int]:
        prompt = data["prompt"] if not chat else "\n".join(m["content"] for m in data["messages"])
        n = int(data.get("n", 1)) if self.honour_n else 1
        seed = data.get("seed", 0)
        max_tokens = int(data.get("max_tokens", 16))
        choices, counts = [], []
        names, weights = list(self.answers), list(self.answers.values())
        for i in range(n):
            rng = random.Random(f"{seed}:{i}:{prompt}")
            words = [f"w{j}" for j in range(rng.randint(1, self.filler))]
            words += ["The", "answer", "is", f"{rng.choices(names, weights)[0]}."]
            finish = "stop"
            if len(words) > max_tokens:
                words, finish = words[:max_tokens], "length"
            text = " " + " ".join(words)
            for s in data.get("stop") or []:
                if s in text:
                    text, finish = text[: text.index(s)], "stop"
            toks = text.split()
            lps = [-0.05 * (j + 1) for j in range(len(toks))]
            choice: dict = {"index": i, "finish_reason": finish}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
                choice["logprobs"] = {"content": [{"token": t, "logprob": lp} for t, lp in zip(toks, lps, strict=False)]} \
                    if (self.logprobs and data.get("logprobs")) else None
            else:
                choice["text"] = text
                choice["logprobs"] = {"tokens": toks, "token_logprobs": lps} \
                    if (self.logprobs and data.get("logprobs") is not None) else None
            choices.append(choice)
            counts.append(len(toks))
        prompt_tokens = self._count(prompt)
        reported = counts[0] if self.usage_first_choice_only else sum(counts)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": reported,
                 "total_tokens": prompt_tokens + reported}
        return {"object": "text_completion", "choices": choices, "usage": usage}, sum(counts), prompt_tokens

"""Mock HTTP APIs: what a request costs through a harness mock API, against bare respx and httpx.MockTransport.

Each case is the time per request of what a test's code under test does,
``await client.post(URL, json={...})`` then ``response.json()``, through one ``httpx.AsyncClient``
reused for a batch, in one running event loop; the mock is activated (and the client made) before
the batch and torn down after it, outside the timer:

- ``transport``: ``httpx.AsyncClient(transport=httpx.MockTransport(handler))``: the floor, no patching.
- ``respx``: ``respx.mock(base_url=...)`` with two routes (POST /messages, GET /messages/{id}),
  a plain ``httpx.AsyncClient()``.
- ``harness``: a ``MockApi`` with the same two routes as ``endpoint()``s, ``async with``, a plain
  ``httpx.AsyncClient()``.

Interleaved rounds (the cases' order rotated each round), a batch of requests per case per round,
no garbage collection inside a batch. Figures: µs per request of each case (medians), harness /
respx (target ≤ 1.5) and harness / transport (informative).

    python bench/bench_http.py [--output .bench/results.json] [--quick]
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import respx
from common import command_line, merge_results, print_figures

from harness import MockApi, endpoint

BASE_URL = "https://api.sms.test/v1"
URL = f"{BASE_URL}/messages"
PAYLOAD = {"to": "+15551234567", "body": "hi"}
SENT = {"id": "msg_1", "status": "sent"}
DELIVERED = {"status": "delivered"}


class SmsApi(MockApi):
    base_url = BASE_URL
    send_message = endpoint("POST", "/messages", status=201, json=SENT)
    get_status = endpoint("GET", "/messages/{message_id}", json=DELIVERED)


def handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(201, json=SENT)


@asynccontextmanager
async def transport() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        yield client


@asynccontextmanager
async def bare_respx() -> AsyncIterator[httpx.AsyncClient]:
    async with respx.mock(base_url=BASE_URL, assert_all_called=False) as respx_mock:
        respx_mock.post("/messages").respond(201, json=SENT)
        respx_mock.get(path__regex=r"/messages/(?P<message_id>[^/]+)$").respond(200, json=DELIVERED)
        async with httpx.AsyncClient() as client:
            yield client


@asynccontextmanager
async def harness_api() -> AsyncIterator[httpx.AsyncClient]:
    async with SmsApi(), httpx.AsyncClient() as client:
        yield client


CASES: dict[str, Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]]] = {
    "transport": transport,
    "respx": bare_respx,
    "harness": harness_api,
}


async def batch(case: Callable[[], AbstractAsyncContextManager[httpx.AsyncClient]], requests: int) -> float:
    """µs per request over `requests` requests through one client, the mock set up outside the timer."""
    async with case() as client:
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            for _ in range(requests):
                response = await client.post(URL, json=PAYLOAD)
                body = response.json()
            elapsed = time.perf_counter() - start
        finally:
            gc.enable()
    assert (response.status_code, body) == (201, SENT), (response.status_code, body)
    return elapsed / requests * 1e6


async def bench_requests(rounds: int, requests: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for case in CASES.values():
        await batch(case, requests)  # warm imports, SSL contexts, regex caches
    names = list(CASES)
    for n in range(rounds):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            samples[name].append(await batch(CASES[name], requests))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    args = command_line(__doc__)
    rounds, requests = (5, 50) if args.quick else (15, 200)
    medians = asyncio.run(bench_requests(rounds, requests))
    print(
        f"\nhttp: {rounds} rounds of {requests} requests per case; µs per request (medians): "
        + "  ".join(f"{k}={v:.1f}" for k, v in medians.items())
    )
    figures = {
        "http_mock_us_per_request_transport": round(medians["transport"], 1),
        "http_mock_us_per_request_respx": round(medians["respx"], 1),
        "http_mock_us_per_request_harness": round(medians["harness"], 1),
        "http_mock_overhead_vs_respx": round(medians["harness"] / medians["respx"], 3),
        "http_mock_overhead_vs_transport": round(medians["harness"] / medians["transport"], 3),
    }
    print_figures(figures, {"overhead_vs_respx": ("≤", 1.5)})
    merge_results(args.output, figures)


if __name__ == "__main__":
    main()

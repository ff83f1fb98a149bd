"""Which server is behind the endpoint, from what it says at its own URLs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker._server_kind import ServerKind, _root, detect


def _serving(routes: dict[str, object]) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            if body is not None:
                self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def llamacpp() -> Iterator[str]:
    yield from _serving({"/props": {"total_slots": 3, "model_path": "m.gguf"}})


@pytest.fixture
def plain() -> Iterator[str]:
    yield from _serving({})


def test_llama_server_says_its_slots(llamacpp: str) -> None:
    found = detect(llamacpp, "auto")
    assert found == ServerKind("llamacpp", 3)
    assert found.max_calls(64) == 3 and found.max_calls(2) == 2


def test_a_server_that_says_nothing_is_taken_as_openai_like(plain: str) -> None:
    assert detect(plain, "auto") == ServerKind("openai")
    assert detect(plain, "auto").max_calls(64) == 64


def test_ollama_and_vllm_by_their_version_urls() -> None:
    for path, kind in (("/api/version", "ollama"), ("/version", "vllm")):
        for url in _serving({path: {"version": "1.0"}}):
            assert detect(url, "auto").kind == kind
    assert ServerKind("ollama").max_calls(64) == 4


def test_openai_itself_and_a_named_kind_are_not_probed() -> None:
    assert detect(None, "auto") == ServerKind("openai")
    assert detect("https://api.openai.com/v1", "auto") == ServerKind("openai")
    assert detect("http://127.0.0.1:9/v1", "vllm") == ServerKind("vllm")  # nothing listens
    assert detect("http://127.0.0.1:9/v1", "auto") == ServerKind("openai")  # refused: no kind


def test_the_root_is_the_base_url_without_v1() -> None:
    assert _root("http://h:8080/v1") == "http://h:8080"
    assert _root("http://h:8080/v1/") == "http://h:8080"
    assert _root("http://h/proxy/v1") == "http://h/proxy"

"""`edge-colbert serve`: the HTTP API, tested in-process with FastAPI's TestClient for errors
and over real HTTP against the real command (uvicorn on 127.0.0.1, a free port), including
10 concurrent clients while another thread writes to the index."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_colbert.cli import main
from edge_colbert.encoder import Encoder
from edge_colbert.index import Index

ROOT = Path(__file__).resolve().parents[1]
EXTRA = 'needs the server extra: pip install "edge-colbert[server]"'
# Texts in the tiny model's vocabulary (common English words), each about one thing.
TOPICS = {
    "water": "the water of the river is cold",
    "music": "she can play music and sing a song",
    "house": "their new house has a large garden",
    "school": "the boy will go to school and read",
    "food": "we like to eat bread and drink milk",
}


@pytest.fixture(scope="module")
def server_extra() -> None:
    pytest.importorskip("fastapi", reason=EXTRA)
    pytest.importorskip("uvicorn", reason=EXTRA)
    pytest.importorskip(
        "httpx", reason='TestClient needs httpx: pip install "edge-colbert[test-extras]"'
    )


def _build(db: Path, encoder: Encoder, root: Path) -> None:
    """Two folders of files, one chunk per topic, metadata as `index` stores it."""
    texts, ids, metas = [], [], []
    for folder in ("notes", "papers"):
        for number, (topic, text) in enumerate(TOPICS.items()):
            path = str(root / folder / f"{topic}.md")
            texts.append(text)
            ids.append(f"{path}#0")
            metas.append({"path": path, "chunk": 0, "line": number + 1, "topic": topic})
    with Index(db, encoder=encoder) as index:
        index.add(texts, ids=ids, metadata=metas)


@pytest.fixture
def db(tmp_path: Path, tiny_encoder: Encoder) -> Path:
    path = tmp_path / "server.db"
    _build(path, tiny_encoder, tmp_path)
    return path


@pytest.fixture
def client(server_extra: None, db: Path, tiny_encoder: Encoder) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from edge_colbert.server.app import create_app
    from edge_colbert.server.service import SearchService

    with Index(db, encoder=tiny_encoder, readonly=True) as index:
        app = create_app(SearchService(index, tiny_encoder))
        with TestClient(app) as test_client:
            yield test_client


# ------------------------------------------------------------------------------ the API


def test_search_returns_hits_with_passage_highlights_and_metadata(
    client: Any, tmp_path: Path
) -> None:
    response = client.get("/api/search", params={"q": "bread and milk", "k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "bread and milk" and body["k"] == 3
    assert len(body["hits"]) == 3
    top = body["hits"][0]
    assert top["metadata"]["topic"] == "food"
    assert top["rank"] == 1 and isinstance(top["score"], float)
    assert top["path"] == top["metadata"]["path"]
    assert top["file_url"] == Path(top["path"]).as_uri()
    assert top["location"] == top["place"] == "line 5" and top["heading"] is None
    assert 0 <= top["passage"]["start"] < top["passage"]["end"] <= len(top["text"])
    marked = [top["text"][s["start"] : s["end"]] for s in top["highlights"]]
    assert "bread" in marked and "milk" in marked, marked  # query words in the text
    scores = [hit["score"] for hit in body["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_filters_by_metadata_and_by_path_prefix(client: Any, tmp_path: Path) -> None:
    where = json.dumps({"topic": ["food", "house"]})
    hits = client.get("/api/search", params={"q": "river", "k": 10, "where": where}).json()["hits"]
    assert {h["metadata"]["topic"] for h in hits} == {"food", "house"} and len(hits) == 4

    notes = str(tmp_path / "notes")
    hits = client.get("/api/search", params={"q": "river", "k": 10, "path": notes}).json()["hits"]
    assert len(hits) == 5 and all(h["path"].startswith(notes + os.sep) for h in hits)
    # A prefix is a folder, not a string prefix: "note" is not "notes".
    hits = client.get("/api/search", params={"q": "river", "path": str(tmp_path / "note")}).json()
    assert hits["hits"] == []
    one_file = str(tmp_path / "papers" / "music.md")
    hits = client.get("/api/search", params={"q": "river", "path": one_file}).json()["hits"]
    assert [h["path"] for h in hits] == [one_file]
    both = {"q": "river", "path": notes, "where": json.dumps({"topic": "school"})}
    hits = client.get("/api/search", params=both).json()["hits"]
    assert [h["metadata"]["topic"] for h in hits] == ["school"]


def test_info_and_documents(client: Any, tmp_path: Path) -> None:
    info = client.get("/api/info").json()
    assert info["documents"] == 10 and info["files"] == 10
    assert "semantic" in info["modes"] and info["default_mode"] in info["modes"]
    doc_id = f"{tmp_path / 'notes' / 'food.md'}#0"
    response = client.get("/api/documents/" + urllib.parse.quote(doc_id))
    assert response.status_code == 200, response.text
    assert response.json()["text"] == TOPICS["food"]
    assert response.json()["location"] == "line 5"
    missing = client.get("/api/documents/" + urllib.parse.quote("/no/such#0"))
    assert missing.status_code == 404
    assert "no document has id '/no/such#0'" in missing.json()["error"]


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"q": "  "}, 400, "the query is empty"),
        ({}, 422, "q: Field required"),
        ({"q": "river", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ({"q": "river", "k": 101}, 422, "k: Input should be less than or equal to 100 (got"),
        ({"q": "river", "k": "ten"}, 422, "k: Input should be a valid integer"),
        ({"q": "river", "mode": "fuzzy"}, 422, "mode: Input should be 'hybrid', 'semantic' or"),
        ({"q": "river", "where": "{topic: 1}"}, 400, "where is not valid JSON"),
        ({"q": "river", "where": "[1, 2]"}, 400, "where must be a JSON object"),
        ({"q": "river", "where": '{"topic": {"a": 1}}'}, 400, "use a string, number, bool"),
        ({"q": "river", "where": '{"": 1}'}, 400, "where keys must be non-empty strings"),
    ],
)
def test_bad_requests_get_one_clear_json_error(
    client: Any, params: dict[str, Any], status: int, words: str
) -> None:
    response = client.get("/api/search", params=params)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert words in response.json()["error"]


def test_every_mode_answers_and_says_which_it_used(client: Any) -> None:
    assert client.get("/api/info").json()["modes"] == ["hybrid", "semantic", "keyword"]
    for mode in ("hybrid", "semantic", "keyword"):
        response = client.get("/api/search", params={"q": "bread and milk", "mode": mode})
        assert response.status_code == 200, response.text
        assert response.json()["mode"] == mode
        assert response.json()["hits"][0]["metadata"]["topic"] == "food"
    # Without a mode, the index's default.
    assert client.get("/api/search", params={"q": "bread"}).json()["mode"] == "hybrid"


def test_highlight_false_skips_the_matched_words(client: Any) -> None:
    body = client.get("/api/search", params={"q": "river", "highlight": "false"}).json()
    assert body["hits"] and all(hit["highlights"] == [] for hit in body["hits"])


def test_page_is_one_self_contained_file(client: Any) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    assert 'id="q"' in html and "prefers-color-scheme: dark" in html
    # Nothing is fetched from elsewhere: no http(s) URL in any src, href or url().
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?https?:""", html)
    assert client.get("/openapi.json").json()["paths"].keys() >= {
        "/api/search",
        "/api/info",
        "/api/documents/{doc_id}",
    }


def test_a_loopback_server_refuses_other_host_names(
    server_extra: None, db: Path, tiny_encoder: Encoder
) -> None:
    from fastapi.testclient import TestClient

    from edge_colbert.server.app import create_app
    from edge_colbert.server.service import SearchService

    with Index(db, encoder=tiny_encoder, readonly=True) as index:
        app = create_app(SearchService(index, tiny_encoder), allowed_hosts={"127.0.0.1"})
        with TestClient(app, base_url="http://127.0.0.1:8765") as local:
            assert local.get("/api/info").status_code == 200
        with TestClient(app, base_url="http://attacker.example") as rebound:
            response = rebound.get("/api/info")
    assert response.status_code == 400
    assert "only requests addressed to 127.0.0.1" in response.json()["error"]


def test_a_read_only_service_follows_another_writer(
    server_extra: None, db: Path, tiny_encoder: Encoder
) -> None:
    from edge_colbert.server.service import SearchService

    with Index(db, encoder=tiny_encoder, readonly=True) as reader:
        service = SearchService(reader, tiny_encoder)
        assert service.info()["documents"] == 10
        with Index(db, encoder=tiny_encoder) as writer:
            writer.add(["the old man will write a long letter"], ids=["letter"])
        assert service.info()["documents"] == 11
        found = service.search("old man letter", k=1)["hits"][0]
        assert found["id"] == "letter" and found["path"] is None and found["file_url"] is None
        assert service.document("letter") is not None


def test_highlights_from_stored_vectors_match_encoding_the_hits_again(
    db: Path, tiny_encoder: Encoder
) -> None:
    from edge_colbert.highlight import match_spans
    from edge_colbert.index import Hit
    from edge_colbert.server.spans import hit_spans

    with Index(db, encoder=tiny_encoder, readonly=True) as index:
        for query in ["bread and milk", "the boy will read a book", "play music in the garden"]:
            hits = index.search(query, 10)
            expected = match_spans(tiny_encoder, query, [hit.text for hit in hits])
            assert hit_spans(index, tiny_encoder, query, hits) == expected
        # A hit whose text changed after the search (or that is gone) is encoded again.
        changed = [Hit(hits[0].id, 1.0, "she likes to drink milk"), Hit("gone", 1.0, "milk")]
        assert hit_spans(index, tiny_encoder, "milk", changed) == match_spans(
            tiny_encoder, "milk", [hit.text for hit in changed]
        )


def test_highlights_of_a_pooled_index_encode_the_hits(
    tmp_path: Path, tiny_encoder: Encoder
) -> None:
    from edge_colbert.highlight import match_spans
    from edge_colbert.server.spans import hit_spans

    texts = list(TOPICS.values())
    with Index(tmp_path / "pooled.db", encoder=tiny_encoder, pool_factor=2) as index:
        index.add(texts)
        hits = index.search("bread and milk", 5)
        assert hit_spans(index, tiny_encoder, "bread and milk", hits) == match_spans(
            tiny_encoder, "bread and milk", [hit.text for hit in hits]
        )


# ------------------------------------------------------------------- the real command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served:
    """`edge-colbert serve` running in a child process."""

    def __init__(self, db: Path, model: Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge_colbert", "--model", str(model), "serve", str(db), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # printed once the port is bound
        found = re.search(r"on (http://\S+/)", line)
        if not found:
            self.process.kill()
            raise AssertionError(f"no URL in {line!r}; stderr: {self.process.stderr.read()}")  # type: ignore[union-attr]
        self.url = found.group(1)
        self.first_line = line

    def get(self, path: str, **params: Any) -> tuple[int, Any]:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        try:
            with urllib.request.urlopen(self.url + path + query, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.get("api/info")[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
            time.sleep(0.2)

    def stop(self) -> tuple[int, str, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=30)
        return self.process.returncode, out, err


@pytest.fixture
def served(server_extra: None, db: Path, tiny_model_dir: Path) -> Iterator[Served]:
    server = Served(db, tiny_model_dir, "--port", "0")
    try:
        server.wait_ready()
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.communicate(timeout=30)


def test_serve_answers_plain_http_and_stops_cleanly_on_ctrl_c(served: Served) -> None:
    assert served.url.startswith("http://127.0.0.1:")
    status, body = served.get("api/search", q="bread and milk", k=2)
    assert status == 200 and body["hits"][0]["metadata"]["topic"] == "food"
    status, body = served.get("api/search", q="bread", k=1000)
    assert status == 422 and "k:" in body["error"]
    with urllib.request.urlopen(served.url, timeout=30) as page:
        assert b'id="q"' in page.read()
    code, out, err = served.stop()
    assert code == 0, err
    assert out.splitlines()[-1] == "stopped" and "Traceback" not in err


def test_ten_clients_search_while_a_writer_adds(
    served: Served, db: Path, tiny_encoder: Encoder
) -> None:
    batches, per_batch, rounds = 6, 5, 6
    errors: list[str] = []
    answered = []

    def client(number: int) -> None:
        for turn in range(rounds):
            query = list(TOPICS.values())[(number + turn) % len(TOPICS)]
            status, body = served.get("api/search", q=query, k=5)
            if status != 200 or not body["hits"]:
                errors.append(f"client {number}: {status} {body}")
                continue
            hit = body["hits"][0]
            if not 0 <= hit["passage"]["start"] <= hit["passage"]["end"] <= len(hit["text"]):
                errors.append(f"client {number}: bad passage {hit['passage']}")
            answered.append(status)

    def writer() -> None:
        with Index(db, encoder=tiny_encoder) as index:
            for batch in range(batches):
                index.add(
                    [f"new letter number {batch} {n} about the sea" for n in range(per_batch)],
                    ids=[f"new-{batch}-{n}" for n in range(per_batch)],
                    metadata=[{"batch": batch}] * per_batch,
                )
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    threads.append(threading.Thread(target=writer))
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(thread.is_alive() for thread in threads), "clients or writer hung"
    assert errors == []
    assert len(answered) == 10 * rounds
    assert time.monotonic() - began < 240
    # The server follows the writes: every added document is searchable through it.
    status, info = served.get("api/info")
    assert status == 200 and info["documents"] == 10 + batches * per_batch
    last = json.dumps({"batch": batches - 1})
    status, body = served.get("api/search", q="new letter", k=10, where=last)
    assert status == 200 and len(body["hits"]) == per_batch
    code, _, err = served.stop()
    assert code == 0, err


# ------------------------------------------------------------------- bad command lines


def test_port_in_use_is_one_line(
    server_extra: None, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(db), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"edge-colbert: error: port {port} on 127.0.0.1 is already in use" in err


@pytest.mark.parametrize(
    ("make", "args", "words"),
    [
        (None, [], "index file {db} does not exist; create it with"),
        ("text", [], "is not an edge-colbert index"),
        ("folder", [], "is a folder, not an index file"),
        ("index", ["--host", "0.0.0.0"], "--host 0.0.0.0 would let other machines read"),
        (
            "index",
            ["--host", "no-such-host.invalid"],
            "--host no-such-host.invalid: cannot resolve",
        ),
    ],
)
def test_bad_command_lines_are_one_line(
    server_extra: None,
    tmp_path: Path,
    tiny_encoder: Encoder,
    capsys: pytest.CaptureFixture[str],
    make: str | None,
    args: list[str],
    words: str,
) -> None:
    db = tmp_path / "x.db"
    if make == "text":
        db.write_text("not an index\n")
    elif make == "folder":
        db.mkdir()
    elif make == "index":
        _build(db, tiny_encoder, tmp_path)
    assert main(["serve", str(db), "--port", "0", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edge-colbert: error: "), err
    assert words.format(db=db) in err
    if make is None:
        assert not db.exists()  # a mistyped path is not created


def test_port_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "x.db", "--port", "70000"]) == 2
    assert "ports run from 1 to 65535" in capsys.readouterr().err


def test_allow_remote_prints_a_warning(server_extra: None, db: Path, tiny_model_dir: Path) -> None:
    port = _free_port()
    # -q still prints the address (the only way to learn a --port 0 one) and the warning.
    remote = Served(
        db, tiny_model_dir, "-q", "--host", "0.0.0.0", "--allow-remote", "--port", str(port)
    )
    try:
        assert remote.url == f"http://0.0.0.0:{port}/"
        remote.url = f"http://127.0.0.1:{port}/"  # 0.0.0.0 takes loopback connections too
        remote.wait_ready()  # Ctrl-C before the server runs is "interrupted", exit 130
        code, _, err = remote.stop()
    finally:
        if remote.process.poll() is None:
            remote.process.kill()
    assert code == 0
    assert "warning: listening on 0.0.0.0: every machine that can reach this one" in err


def test_without_the_extra_serve_names_it(db: Path) -> None:
    # Both made unimportable in a child process (find_spec() then reports them missing), so
    # that the test reads the same with the extra installed or not.
    code = (
        "import sys; sys.modules['fastapi'] = sys.modules['uvicorn'] = None\n"
        "from edge_colbert.cli import main\n"
        f"raise SystemExit(main(['serve', {str(db)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "edge-colbert: error: fastapi and uvicorn not installed; the web server needs FastAPI "
        'and uvicorn: pip install "edge-colbert[server]"'
    ]


def test_hits_carry_the_weak_match_cue(server_extra: None, tmp_path: Path) -> None:
    """`weak` per hit: false for a good match, true for every hit of an unrelated query, null
    in keyword mode (no MaxSim). The bar was calibrated for the bundled model, so it is used."""
    from fastapi.testclient import TestClient

    from edge_colbert.errors import ModelFolderError
    from edge_colbert.server.app import create_app
    from edge_colbert.server.service import SearchService

    try:
        encoder = Encoder()
    except ModelFolderError as error:  # a checkout without the bundled model
        pytest.skip(f"the bundled model is not available: {error}")
    db = tmp_path / "bundled.db"
    _build(db, encoder, tmp_path)
    with Index(db, encoder=encoder, readonly=True) as index:
        app = create_app(SearchService(index, encoder))
        with TestClient(app) as test_client:

            def weak(query: str, mode: str) -> list[Any]:
                params = {"q": query, "k": 3, "mode": mode}
                response = test_client.get("/api/search", params=params)
                assert response.status_code == 200, response.text
                return [hit["weak"] for hit in response.json()["hits"]]

            for mode in ("semantic", "hybrid"):
                assert weak("we like to eat bread and drink milk", mode)[0] is False
                assert weak("zebra crossing protocol for llama migrations", mode) == [True] * 3
            assert weak("bread", "keyword") == [None, None]  # in notes/ and papers/

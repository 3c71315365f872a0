"""The pages as files and routes, without a browser (the browser tier is tests/browser/).

- ``/console``, ``/talk`` and ``/ops`` answer 200 HTML with the Content-Security-Policy
  header, with and without ``--dev``.
- ``/`` (the demo sign-in), ``/dev/users`` and ``/dev/token`` exist with ``--dev`` only;
  ``/dev/token`` validates its body and mints a token the server accepts.
- Every ``<script src>`` and ``<link href>`` of a page, and every module a script
  imports, exists under ``dispatch/static`` and is served.
- Nothing the CSP (``script-src 'self'; style-src 'self'``) would block: no inline
  ``<script>`` bodies, ``<style>`` elements, ``style=`` or ``on*=`` attributes.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from starlette.testclient import TestClient

from core.identity import verify
from dispatch.app import create_app
from dispatch.settings import load_settings

STATIC = Path(__file__).resolve().parents[1] / "dispatch" / "static"
SECRET = "pages-test-secret-" + "y" * 40

#: Route -> file under dispatch/static; the sign-in page is served only with --dev.
PAGES = {
    "/console": "console.html",
    "/talk": "talk.html",
    "/ops": "ops.html",
    "/find": "find.html",
    "/forms": "forms.html",
    "/book/t-alpha": "book.html",
}
ALL_PAGES = {**PAGES, "/": "signin.html"}


def _client(tmp_path: Path, dev: bool) -> Iterator[TestClient]:
    overrides: dict[str, Any] = {
        "dev": dev,
        "secret": SECRET,
        "data_key": Fernet.generate_key().decode(),
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'dispatch.db'}",
    }
    app = create_app(load_settings(overrides, env={}))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def dev_client(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, dev=True)


@pytest.fixture
def prod_client(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, dev=False)


# -- HTML inspection ---------------------------------------------------------------------


class _Refs(HTMLParser):
    """What a page references and what of it the CSP would refuse."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[str] = []
        self.links: list[str] = []
        self.inline_scripts: list[str] = []
        self.style_elements = 0
        self.style_attrs: list[str] = []
        self.handler_attrs: list[str] = []
        self._in_script_without_src = False
        self._script_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, _ in attrs:
            if name == "style":
                self.style_attrs.append(tag)
            if name.startswith("on"):
                self.handler_attrs.append(f"{tag}[{name}]")
        if tag == "script":
            src = values.get("src")
            if src:
                self.scripts.append(src)
            else:
                self._in_script_without_src = True
                self._script_text = []
        elif tag == "link" and values.get("href"):
            href = str(values["href"])
            # An inline icon (``data:``, allowed by img-src) saves a /favicon.ico 404.
            if not (href.startswith("data:") and "icon" in (values.get("rel") or "")):
                self.links.append(href)
        elif tag == "style":
            self.style_elements += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._in_script_without_src:
            self._in_script_without_src = False
            body = "".join(self._script_text).strip()
            if body:
                self.inline_scripts.append(body[:60])

    def handle_data(self, data: str) -> None:
        if self._in_script_without_src:
            self._script_text.append(data)


def _refs(page: str) -> _Refs:
    parser = _Refs()
    parser.feed((STATIC / page).read_text(encoding="utf-8"))
    parser.close()
    return parser


def _static_file(url: str) -> Path:
    """The file under dispatch/static that a same-origin ``/static/...`` URL names."""
    assert url.startswith("/static/"), f"{url!r} is not served from /static/ (CSP: 'self')"
    path = url.split("?", 1)[0].split("#", 1)[0].removeprefix("/static/")
    assert ".." not in path.split("/"), url
    return STATIC / path


_IMPORT_RE = re.compile(
    r"""(?:\bimport\s*(?:[\w*{}\s,$]+\s*from\s*)?|\bexport\s*[\w*{}\s,$]+\s*from\s*|\bimport\s*\()"""
    r"""\s*["']([^"']+)["']"""
)


def _module_imports(js: Path) -> list[str]:
    """The static and dynamic import specifiers of a JavaScript module."""
    text = js.read_text(encoding="utf-8")
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    return _IMPORT_RE.findall(text)


def _resolve(base_url: str, spec: str) -> str:
    assert spec.startswith(("./", "../", "/")), (
        f"bare module specifier {spec!r} in {base_url} (no build step: use a path)"
    )
    if spec.startswith("/"):
        return spec
    return posixpath.normpath(posixpath.join(posixpath.dirname(base_url), spec))


# -- routes ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", sorted(PAGES))
@pytest.mark.parametrize("dev", [False, True])
def test_pages_answer_html_with_csp(route: str, dev: bool, tmp_path: Path) -> None:
    for client in _client(tmp_path, dev):
        resp = client.get(route)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/html")
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.text == (STATIC / PAGES[route]).read_text(encoding="utf-8")
        assert "<html" in resp.text.lower()


def test_signin_and_dev_routes_are_absent_without_dev(prod_client: TestClient) -> None:
    assert prod_client.get("/").status_code == 404
    assert prod_client.get("/dev/users").status_code == 404
    body = {"role": "therapist", "sub": "t-1"}
    resp = prod_client.post("/dev/token", json=body)
    assert resp.status_code == 404
    assert "token" not in resp.json()


def test_signin_page_and_dev_users_with_dev(dev_client: TestClient) -> None:
    resp = dev_client.get("/")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    users = dev_client.get("/dev/users").json()["users"]
    roles = {u["role"] for u in users}
    assert roles == {"therapist", "client", "operator"}
    assert all(u["id"] and u["name"] for u in users)


def test_dev_token_mints_a_token_the_server_accepts(dev_client: TestClient) -> None:
    resp = dev_client.post(
        "/dev/token", json={"role": "therapist", "sub": "demo-therapist-1", "name": "Dr A"}
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["user"] == {"id": "demo-therapist-1", "role": "therapist", "name": "Dr A"}
    user = verify(SECRET, data["token"])
    assert (user.id, user.role.value, user.name) == ("demo-therapist-1", "therapist", "Dr A")
    # The minted token works on the API (a therapist reads its call log).
    listed = dev_client.get("/v1/sessions", headers={"Authorization": f"Bearer {data['token']}"})
    assert listed.status_code == 200, listed.text
    # Name is optional.
    resp = dev_client.post("/dev/token", json={"role": "operator", "sub": "op.1"})
    assert resp.status_code == 200
    assert verify(SECRET, resp.json()["token"]).name is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "admin", "sub": "x"}, "role"),
        ({"sub": "x"}, "role"),
        ({"role": "client"}, "sub"),
        ({"role": "client", "sub": ""}, "sub"),
        ({"role": "client", "sub": "a" * 65}, "sub"),
        ({"role": "client", "sub": "bad sub!"}, "sub"),
        ({"role": "client", "sub": 7}, "sub"),
        ({"role": "client", "sub": "c1", "name": ""}, "name"),
        ({"role": "client", "sub": "c1", "name": "n" * 101}, "name"),
        ({"role": "client", "sub": "c1", "name": 5}, "name"),
        (["client", "c1"], "body"),
    ],
)
def test_dev_token_rejects_bad_bodies(dev_client: TestClient, body: Any, field: str) -> None:
    resp = dev_client.post("/dev/token", json=body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_field"
    assert field in error["message"] or error.get("field") == field
    assert "token" not in resp.json()


def test_dev_token_rejects_non_json(dev_client: TestClient) -> None:
    resp = dev_client.post(
        "/dev/token", content=b"role=client", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    assert "token" not in resp.json()


# -- the files ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", sorted(ALL_PAGES.values()))
def test_page_references_exist_and_are_served(page: str, dev_client: TestClient) -> None:
    refs = _refs(page)
    assert refs.scripts, f"{page} loads no script"
    seen: set[str] = set()
    todo = [*refs.scripts, *refs.links]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        path = _static_file(url)
        assert path.is_file(), f"{page}: {url} does not exist ({path})"
        resp = dev_client.get(url)
        assert resp.status_code == 200, f"{page}: GET {url} -> {resp.status_code}"
        if path.suffix == ".js":
            assert "javascript" in resp.headers["content-type"], (url, resp.headers)
            todo += [_resolve(url, spec) for spec in _module_imports(path)]
        elif path.suffix == ".css":
            assert resp.headers["content-type"].startswith("text/css"), url
    assert any(u.endswith(".js") for u in seen)


@pytest.mark.parametrize("page", sorted(ALL_PAGES.values()))
def test_pages_hold_nothing_the_csp_refuses(page: str) -> None:
    refs = _refs(page)
    assert refs.inline_scripts == [], f"{page}: inline <script> bodies: {refs.inline_scripts}"
    assert refs.style_elements == 0, f"{page}: inline <style> elements"
    assert refs.style_attrs == [], f"{page}: style= attributes on {refs.style_attrs}"
    assert refs.handler_attrs == [], f"{page}: inline event handlers {refs.handler_attrs}"


def test_module_import_scanner_sees_imports(tmp_path: Path) -> None:
    """The import scanner the reference check relies on finds every form."""
    js = tmp_path / "m.js"
    js.write_text(
        'import { a, b } from "./protocol.js";\n'
        "import * as c from '../x/call.js';\n"
        'import "./side.js";\n'
        'export { d } from "./auth.js";\n'
        '// import { no } from "./commented.js";\n'
        'const m = await import("./lazy.js");\n',
        encoding="utf-8",
    )
    assert sorted(_module_imports(js)) == sorted(
        ["./protocol.js", "../x/call.js", "./side.js", "./auth.js", "./lazy.js"]
    )
    assert _resolve("/static/js/console.js", "./protocol.js") == "/static/js/protocol.js"
    assert _resolve("/static/js/console.js", "../css/a.css") == "/static/css/a.css"

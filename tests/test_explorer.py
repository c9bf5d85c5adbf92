"""The GraphQL explorer works offline: its page loads only the broker's own, pinned files."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest
from joserfc.jwk import ECKey
from playwright.sync_api import Page, expect

from broker import explorer
from broker.storage.embedded import EmbeddedRedis
from tests.browser import Network
from tests.conftest import Api, MakeApi
from tests.jwks_server import IdentityProvider, sign
from tests.processes import Process, broker_env

PATHS = ["/graphql", "/graphql/v25"]
NPM = Path(explorer.__file__).parent / "npm"
VENDOR = explorer.STATIC / "vendor"
HTML = {"Accept": "text/html"}


def referenced_files(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


# The page and its files over HTTP ------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_explorer_page_loads_only_files_the_broker_serves(api: Api, path: str) -> None:
    page = await api.http.get(path, headers=HTML)

    assert page.status_code == 200
    files = referenced_files(page.text)
    assert len(files) == 6  # GraphiQL's script and styles, React, ReactDOM, the page's own two
    for file in files:
        assert file.startswith(explorer.ASSETS_PATH + "/"), file
        served = await api.http.get(file)
        assert served.status_code == 200, file
        assert served.content, file
    assert "://" not in page.text


@pytest.mark.parametrize("path", PATHS)
async def test_explorer_page_allows_no_other_origin(api: Api, path: str) -> None:
    page = await api.http.get(path, headers=HTML)

    policy = page.headers["content-security-policy"]
    directives = dict(directive.strip().split(" ", 1) for directive in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"  # no inline script, no eval
    assert directives["connect-src"] == "'self'"
    sources = {source for value in directives.values() for source in value.split()}
    assert sources <= {"'self'", "'none'", "data:"}, sources
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_explorer_files_are_served_with_their_types(api: Api) -> None:
    script = await api.http.get(f"{explorer.ASSETS_PATH}/vendor/graphiql.min.js")
    styles = await api.http.get(f"{explorer.ASSETS_PATH}/vendor/graphiql.min.css")

    assert script.headers["content-type"].startswith("text/javascript")
    assert styles.headers["content-type"].startswith("text/css")
    assert "content-security-policy" in script.headers
    assert script.headers["content-encoding"] == "gzip"  # 1 MB of JavaScript, 0.3 MB sent


async def test_explorer_switched_off_serves_neither_page_nor_files(make_api: MakeApi) -> None:
    api = await make_api(explorer=False)

    for path in PATHS:
        assert (await api.http.get(path, headers=HTML)).status_code == 405
    assert (await api.http.get(f"{explorer.ASSETS_PATH}/explorer.js")).status_code == 404


def test_vendored_packages_are_pinned_and_keep_their_licences() -> None:
    wanted = json.loads((NPM / "package.json").read_text())["dependencies"]
    locked = json.loads((NPM / "package-lock.json").read_text())["packages"]

    for package, version in wanted.items():
        assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", version), f"{package} is not pinned"
        assert locked[f"node_modules/{package}"]["version"] == version
        assert locked[f"node_modules/{package}"]["integrity"].startswith("sha512-")
        assert "MIT License" in (VENDOR / f"{package}.LICENSE").read_text()
    bundled = (VENDOR / "THIRD-PARTY-LICENSES.txt").read_text()
    for path, entry in locked.items():
        if path:
            assert f"{path.removeprefix('node_modules/')} {entry['version']} (" in bundled


# In a real browser with the outside network blocked -------------------------------------------


def open_explorer(page: Page, url: str) -> Page:
    page.goto(url)
    expect(page.locator(".graphiql-container")).to_be_visible(timeout=20_000)
    return page


def run_in_explorer(page: Page, operation: str, query: str) -> None:
    """Replace the editor's text by typing `query operation {query}`, then press run."""
    page.locator(".graphiql-query-editor .CodeMirror").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(f"query {operation} {query}")
    # GraphiQL reads the operation's name a moment after the edit; the tab shows it then.
    expect(page.locator(".graphiql-tab-active")).to_contain_text(operation)
    page.locator(".graphiql-execute-button").click()


def start_broker(tmp_path: Path, redis_server: EmbeddedRedis, **settings: str) -> Process:
    env = broker_env(
        BROKER_REDIS_URL=redis_server.url,
        BROKER_KEY_PREFIX=f"explorer-{uuid.uuid4().hex[:8]}",
        **settings,
    )
    return Process(env, tmp_path / "broker.log")


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_explorer_runs_a_query_in_a_browser_without_internet(
    browser_page: Page,
    network: Network,
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    processes: list[Process],
    path: str,
) -> None:
    broker = start_broker(tmp_path, redis_server)
    processes.append(broker)
    name = f"typed-in-the-explorer-{uuid.uuid4().hex[:8]}"
    declare = "mutation($name: String!) { event_namespace_declare(input: {name: $name}) { name } }"
    broker.gql(declare, {"name": name})

    page = open_explorer(browser_page, broker.url + path)
    run_in_explorer(page, "Listed", "{ event_namespaces { objects { name public } } }")

    expect(page.locator(".result-window")).to_contain_text(name, timeout=20_000)
    # The schema arrived through introspection, within the broker's hostile-input limits.
    page.get_by_label("Show Documentation Explorer").click()
    page.get_by_role("link", name="Query").click()
    expect(page.locator(".graphiql-doc-explorer")).to_contain_text("event_fetch")
    assert network.blocked == []
    assert network.errors == []


@pytest.mark.slow
def test_explorer_sends_the_bearer_token_typed_into_its_headers_editor(
    browser_page: Page,
    network: Network,
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    processes: list[Process],
    provider: IdentityProvider,
    signing_key: ECKey,
) -> None:
    broker = start_broker(
        tmp_path, redis_server, BROKER_AUTH="oidc", BROKER_OIDC_JWKS_URL=provider.jwks_url
    )
    processes.append(broker)
    owner = uuid.uuid4()
    now = int(time.time())
    claims = {"uuid": str(owner), "exp": now + 300, "iat": now, "realm_access": {"roles": []}}
    token = sign(signing_key, claims)

    page = open_explorer(browser_page, broker.url + "/graphql/v25")
    run_in_explorer(page, "Me", "{ me { actor { uuid } } }")
    expect(page.locator(".result-window")).to_contain_text("not authenticated", timeout=20_000)
    page.locator(".graphiql-editor-tool .CodeMirror").last.click()
    page.keyboard.insert_text(json.dumps({"Authorization": f"Bearer {token}"}))
    page.locator(".graphiql-execute-button").click()

    expect(page.locator(".result-window")).to_contain_text(str(owner), timeout=20_000)
    assert network.blocked == []

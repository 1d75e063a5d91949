"""The interactive docs work with no way out of the network: every file they load is the API's."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import crm_perf_sync.api
from crm_perf_sync.api.app import create_app
from crm_perf_sync.kit.db import create_db_engine
from tests.conftest import REPO_ROOT

ASSETS = Path(crm_perf_sync.api.__file__).parent / "static" / "swagger-ui"


class References(HTMLParser):
    """Every URL a page makes the browser load: ``src`` and ``href`` attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:  # noqa: ARG002
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    engine = create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('docs') / 'store.db'}")
    yield TestClient(create_app(engine))
    engine.dispose()


def test_the_docs_load_nothing_from_another_host(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert re.search(r"(https?:)?//", html) is None, "the page names another host"
    references = References()
    references.feed(html)
    scripts = [u for u in references.urls if u.endswith(".js")]
    styles = [u for u in references.urls if u.endswith(".css")]
    assert len(scripts) == 1
    assert len(styles) == 1
    assert len(references.urls) == 3  # the script, the style sheet and the icon
    expected = {
        ".js": ("swagger-ui-bundle.js", "text/javascript"),
        ".css": ("swagger-ui.css", "text/css"),
        ".png": ("favicon-32x32.png", "image/png"),
    }
    for url in references.urls:
        assert url.startswith("/"), url
        name, media_type = expected[Path(url).suffix]
        served = client.get(url)
        assert served.status_code == 200, url
        assert served.headers["content-type"].startswith(media_type), url
        assert served.content == (ASSETS / name).read_bytes()
    assert "'/openapi.json'" in html
    assert '"validatorUrl": null' in html  # no badge from validator.swagger.io either
    assert client.get("/openapi.json").status_code == 200


def test_the_vendored_swagger_ui_is_the_recorded_version_with_its_licence() -> None:
    version = (ASSETS / "VERSION").read_text().strip()
    assert f'PACKAGE_VERSION:"{version}"' in (ASSETS / "swagger-ui-bundle.js").read_text()
    assert "Apache License" in (ASSETS / "LICENSE").read_text()
    assert f"swagger-ui-dist` {version}" in (ASSETS / "README.md").read_text()


def test_redoc_is_not_served(client: TestClient) -> None:
    assert client.get("/redoc").status_code == 404


def test_the_wheel_carries_the_docs_assets(tmp_path: Path) -> None:
    """The image installs the project as a wheel: the docs' files must be inside it."""
    from hatchling.builders.wheel import WheelBuilder

    (wheel,) = WheelBuilder(str(REPO_ROOT)).build(directory=str(tmp_path), versions=["standard"])
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for asset in ASSETS.iterdir():
            name = f"crm_perf_sync/api/static/swagger-ui/{asset.name}"
            assert name in names, name
            assert archive.read(name) == asset.read_bytes()

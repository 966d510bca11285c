"""Edit recipe bodies that are not recipes (issue 3): 422 naming the field and what to send,
400 only for a body that is not JSON at all, 413 past the size limit; nothing appended, no
blob written. No asset is needed: the body is refused before the asset is looked up."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from jobtape.audio.http import recipe_body
from jobtape.config import Settings
from jobtape.defaults import create_app
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage

ASSET = "0" * 32
ROUTES = ("preview", "save")


@dataclasses.dataclass
class Api:
    client: TestClient
    repository: JobRepository
    storage_root: Path

    def post(self, route: str, body: bytes | str, content_type: str = "application/json") -> Any:
        return self.client.post(f"/api/audio/edit/{route}", content=body, headers={"Content-Type": content_type})

    def event_count(self) -> int:
        return int(self.repository.store.backend.query("SELECT COUNT(*) FROM events")[0][0])

    def stored_files(self) -> list[Path]:
        return sorted(p for p in self.storage_root.rglob("*") if p.is_file())


@pytest.fixture
def api(repository: JobRepository, tmp_path: Path) -> Iterator[Api]:
    storage_root = tmp_path / "storage"
    app = create_app(repository, LocalStorage(storage_root), Settings(data_dir=tmp_path))
    with TestClient(app) as client:
        yield Api(client, repository, storage_root)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (f'{{"assetId": "{ASSET}", "startSec": "ten"}}', "startSec", "expected a number, got a string"),
        (f'{{"assetId": "{ASSET}", "gainDb": null}}', "gainDb", "expected a number, got null"),
        (f'{{"assetId": "{ASSET}", "endSec": true}}', "endSec", "got a boolean"),
        (f'{{"assetId": "{ASSET}", "targetLufs": "-14"}}', "targetLufs", "a number or null, got a string"),
        (f'{{"assetId": "{ASSET}", "foo": 1}}', "foo", "unknown field; a recipe has only assetId, startSec"),
        (f'{{"assetId": "{ASSET}", "start_sec": 1}}', "start_sec", "did you mean startSec?"),
        ('{"startSec": 1}', "assetId", "is required; send the asset's id"),
        ('{"assetId": 12}', "assetId", "expected a string, got a number"),
        ('{"assetId": ""}', "assetId", "length >= 1"),
        ("[]", "body", "expected a JSON object, got an array"),
        ('"a recipe"', "body", "expected a JSON object, got a string"),
        (f'{{"assetId": "{ASSET}", "gainDb": 30.5}}', "gainDb", "<= 30.0; send a number of dB from -30 to 30"),
        (f'{{"assetId": "{ASSET}", "gainDb": -1e999}}', "gainDb", "out of range"),
        (f'{{"assetId": "{ASSET}", "targetLufs": -41}}', "targetLufs", ">= -40.0; send a number of LUFS from -40 to -5"),
        (f'{{"assetId": "{ASSET}", "startSec": -0.5}}', "startSec", ">= 0.0; send a number of seconds"),
        (f'{{"assetId": "{ASSET}", "fadeOutSec": -1}}', "fadeOutSec", ">= 0.0"),
    ],
)
def test_a_body_that_is_not_a_recipe_is_422_naming_the_field_and_appends_nothing(api: Api, body: str, field: str, words: str) -> None:
    for route in ROUTES:
        response = api.post(route, body)
        assert response.status_code == 422, response.text
        message = response.json()["error"]
        assert message.startswith(f"{field}: ") and words in message, message
        assert "; send " in message or "a recipe has only" in message
    assert api.event_count() == 0 and api.stored_files() == []


@pytest.mark.parametrize(
    ("body", "words"),
    [("{assetId: 1}", "not valid JSON"), ('{"assetId": "a"', "not valid JSON"), ("", "the body is empty")],
)
def test_a_body_that_is_not_json_at_all_is_400(api: Api, body: str, words: str) -> None:
    for route in ROUTES:
        response = api.post(route, body)
        assert response.status_code == 400, response.text
        assert words in response.json()["error"] and '"assetId"' in response.json()["error"]
    assert api.event_count() == 0


def test_a_body_over_the_limit_is_413(api: Api) -> None:
    padding = " " * recipe_body.MAX_JSON_BYTES
    response = api.post("save", f'{{"assetId": "{ASSET}",{padding}"gainDb": 1}}')
    assert response.status_code == 413 and str(recipe_body.MAX_JSON_BYTES) in response.json()["error"]
    assert api.event_count() == 0


def test_a_well_formed_recipe_passes_the_body_check_whatever_the_content_type(api: Api) -> None:
    recipe = f'{{"assetId": "{ASSET}", "startSec": 1, "endSec": 2.5, "gainDb": -30, "targetLufs": null}}'
    for content_type in ("application/json", "text/plain"):
        response = api.post("preview", recipe, content_type)
        assert (response.status_code, response.json()) == (404, {"error": "Asset not found"})


def test_openapi_documents_the_recipe_body_with_its_ranges(api: Api) -> None:
    document = api.client.get("/schema/openapi.json").json()
    for route in ROUTES:
        operation = document["paths"][f"/api/audio/edit/{route}"]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema["title"] == "Recipe" and schema["required"] == ["assetId"]
        assert schema["additionalProperties"] is False
        fields = schema["properties"]
        assert (fields["gainDb"]["minimum"], fields["gainDb"]["maximum"]) == (-30, 30)
        lufs = next(option for option in fields["targetLufs"]["anyOf"] if option["type"] == "number")
        assert (lufs["minimum"], lufs["maximum"]) == (-40, -5)
        assert fields["startSec"]["minimum"] == 0 and fields["fadeInSec"]["minimum"] == 0
        assert "maximum" not in fields["startSec"]  # the asset's end is checked per asset, not in the schema
        assert {"400", "404", "413", "422", "429"} <= set(operation["responses"])

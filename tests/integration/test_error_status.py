"""A package's errors and description in the HTTP API, with no change to the engine (issue 10).

A user's app registers a route (``app.route``) that raises the app's own error classes,
subclasses of the engine's groups; the API built by :func:`jobtape.http.create_app` over a
real SQLite log answers each with the status its class declares (``http_status``, read along
the MRO: an undeclared subclass answers its parent's, a group its group's) and the body
``{"error": ...}``. The OpenAPI document describes the job API, after the app's own description.
"""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from litestar import get
from litestar.params import FromPath
from litestar.testing import TestClient

import jobtape
from jobtape import errors, runtime
from jobtape.config import Settings
from jobtape.http import app as http_app
from jobtape.http import create_app
from jobtape.http.errors import status_for


class OutOfStock(jobtape.RequestError):
    """The item is out of stock."""

    http_status = 409

    def __init__(self, item: str) -> None:
        self.item = item
        super().__init__(f"{item} is out of stock; order fewer or wait for a restock")


class BackOrdered(OutOfStock):
    """Declares nothing: answers its parent's 409."""


class Discontinued(jobtape.RequestError):
    """Discontinued."""

    http_status = 410
    http_message = "this item is discontinued"


class Recalled(Discontinued):
    """Declares a status of its own, so the parent's fixed message is not its message."""

    http_status = 451


class Unpriced(jobtape.RequestError):
    """Declares nothing: a RequestError answers 422."""


class NoSuchOrder(errors.JobNotFound):
    """An engine class's subclass: the engine's 404 and fixed message."""


class Overbooked(jobtape.ConflictError):
    """Declares nothing: a ConflictError answers 409."""


RAISED: dict[str, errors.JobtapeError] = {
    "out-of-stock": OutOfStock("apples"),
    "back-ordered": BackOrdered("pears"),
    "discontinued": Discontinued("the plums are gone"),
    "recalled": Recalled("the figs are recalled"),
    "unpriced": Unpriced("the kiwis have no price; set one"),
    "no-such-order": NoSuchOrder("0" * 32),
    "overbooked": Overbooked("the slot is taken; pick another"),
}


@get("/api/shop/{case:str}", sync_to_thread=False)
def shop(case: FromPath[str]) -> dict[str, str]:
    """Raise the error named by ``case``."""
    raise RAISED[case]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient[Any], jobtape.App]]:
    """A user's app with the shop route, served in-process over a real SQLite log and local storage."""
    app = jobtape.App(Settings(data_dir=tmp_path), description="A shop's jobs.")
    app.route(shop)
    storage = runtime.open_storage(app.settings)
    with TestClient(
        create_app(
            app.repository,
            storage,
            app.settings,
            routes=app.routes_for(storage),
            dependencies=app.dependencies,
            description=app.description,
        )
    ) as client:
        yield client, app
    app.close()


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("out-of-stock", 409, "apples is out of stock; order fewer or wait for a restock"),
        ("back-ordered", 409, "pears is out of stock; order fewer or wait for a restock"),
        ("discontinued", 410, "this item is discontinued"),
        ("recalled", 451, "the figs are recalled"),
        ("unpriced", 422, "the kiwis have no price; set one"),
        ("no-such-order", 404, "Job not found"),
        ("overbooked", 409, "the slot is taken; pick another"),
    ],
)
def test_a_packages_error_answers_the_status_its_class_declares(
    api: tuple[TestClient[Any], jobtape.App], case: str, status: int, message: str
) -> None:
    client, _ = api
    response = client.get(f"/api/shop/{case}")
    assert (response.status_code, response.json()) == (status, {"error": message}), response.text


def test_a_class_that_declares_a_status_that_is_not_an_error_is_refused_when_defined() -> None:
    for wrong in (200, 302, 600, "409", True):
        with pytest.raises(TypeError, match="http_status must be an HTTP error status"):
            type("Wrong", (jobtape.RequestError,), {"http_status": wrong})
    teapot = type("Teapot", (jobtape.RequestError,), {"http_status": HTTPStatus.IM_A_TEAPOT})
    assert status_for(teapot("short and stout")) == (418, "short and stout")


def test_the_document_describes_the_job_api_after_the_apps_own_description(
    api: tuple[TestClient[Any], jobtape.App], tmp_path: Path
) -> None:
    client, _ = api
    info = client.get("/schema/openapi.json").json()["info"]
    assert info["description"] == f"A shop's jobs.\n\n{http_app.DESCRIPTION}"
    assert "audio" not in info["description"].lower() and "POST /api/jobs" in info["description"]

    settings = Settings(data_dir=tmp_path / "plain")
    repository = runtime.open_repository(settings)
    try:
        with TestClient(create_app(repository, runtime.open_storage(settings), settings)) as plain:
            assert plain.get("/schema/openapi.json").json()["info"]["description"] == http_app.DESCRIPTION
    finally:
        repository.store.close()


def test_the_default_app_describes_the_audio_jobs_then_the_job_api(tmp_path: Path) -> None:
    from jobtape import audio
    from jobtape.defaults import create_app as default_create_app

    settings = Settings(data_dir=tmp_path)
    repository = runtime.open_repository(settings)
    try:
        with TestClient(default_create_app(repository, runtime.open_storage(settings), settings)) as client:
            description = client.get("/schema/openapi.json").json()["info"]["description"]
    finally:
        repository.store.close()
    assert description == f"{audio.DESCRIPTION}\n\n{http_app.DESCRIPTION}"

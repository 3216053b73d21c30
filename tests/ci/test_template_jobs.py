"""The templates' lint and publish jobs, run as the CI runs them, against real inputs.

The VO's checkout is the shipped example recipes with a site policy and the
catalog's pinned root; the catalog is a real one (``catalog init``,
``catalog delegate``, ``publish``) served over HTTP on 127.0.0.1; the MR and
PR comment APIs and GitHub's OIDC token endpoint are :mod:`tests.ci.fakeapi`;
the OCI registry is a real docker-registry on 127.0.0.1 that wants credentials; keyless signing goes
to the private Sigstore instance with the identity token found by sigstore's
own ambient detection. The build jobs are in
tests/integration/test_ci_build_jobs.py (they need a real build).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagefactory.catalog.repo import Catalog
from imagefactory.trust import load_policy
from imagefactory.verify import VerifyOptions, verify_image
from tests.catalog.registry import PASSWORD, USER, auth_registry  # noqa: F401 -- the fixture
from tests.catalog.world import World, fresh, make_world
from tests.ci.fakeapi import FakeApi
from tests.ci.templates import (
    Runner,
    assert_every_command_ran,
    github_jobs,
    gitlab_jobs,
)
from tests.conftest import RECIPES
from tests.fakes.imagedirs import ISSUER, key_signer, make_image, new_key, vo_rules, write_policy
from tests.fakes.sigstore_instance import PrivateSigstore
from tests.lint.test_lint_catalog import publish_previous
from tests.store.httpserver import Server

#: The keyless identity of the CI job in these tests (what a site's policy names).
CI_IDENTITY = "ci@atlas-recipes.example"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path / "w")


@pytest.fixture
def catalog_server(world: World) -> Iterator[Server]:
    server = Server(world.catalog.directory).start()
    yield server
    server.stop()


@pytest.fixture
def api() -> Iterator[FakeApi]:
    api = FakeApi().start()
    yield api
    api.stop()


def vo_checkout(tmp_path: Path, world: World) -> Path:
    """The VO's recipe repository as the CI checks it out."""
    repo = tmp_path / "checkout"
    (repo / "recipes").mkdir(parents=True)
    for name in ("atlas-wn-debian12.yaml", "site-base-debian12.yaml"):
        shutil.copy(RECIPES / name, repo / "recipes" / name)
    shutil.copytree(RECIPES / "files", repo / "recipes" / "files")
    key = new_key(tmp_path, "policy-key")
    write_policy(
        repo / "site-policy.yaml",
        {
            vo: vo_rules(
                key_signer(f"{vo}-vo", key), distros=["debian"], releases=["12"], arches=["x86_64"]
            )
            for vo in ("atlas", "ops")
        },
    )
    (repo / "catalog-root.json").write_bytes(world.root_json)
    return repo


# -- lint on merge requests ---------------------------------------------------------


def gitlab_mr_env(api: FakeApi, catalog: str) -> dict[str, str]:
    return {
        "GITLAB_CI": "true",
        "CI": "true",
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_API_V4_URL": f"{api.url}/api/v4",
        "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": "7",
        "CI_JOB_URL": f"{api.url}/vo/recipes/-/jobs/1",
        "IMAGEFACTORY_NOTES_TOKEN": "notes-token",
        "IMAGEFACTORY_CATALOG_URL": catalog,
    }


def test_gitlab_lint_job(
    tmp_path: Path, world: World, catalog_server: Server, api: FakeApi
) -> None:
    checkout = vo_checkout(tmp_path, world)
    publish_previous(world, RECIPES / "atlas-wn-debian12.yaml")
    job = gitlab_jobs()["imagefactory-lint"]
    run = Runner(tmp_path, checkout).run(job, gitlab_mr_env(api, catalog_server.url))
    assert_every_command_ran(job, run)
    [note] = api.posts()
    assert note.path == "/api/v4/projects/42/merge_requests/7/notes"
    assert note.headers["private-token"] == "notes-token"
    [body] = note.form()["body"]
    assert body == (checkout / "lint.md").read_text()
    assert body.startswith("### recipe lint: all clear")
    assert "| label | published 0.9 | this recipe | |" in body  # against the catalog
    assert "| bzip2 | - | requested | added |" in body
    # The catalog over HTTP: metadata, descriptor and SBOM, never the disk.
    fetched = [path for path, _ in catalog_server.requests]
    assert any(p.endswith("sbom.cdx.json") for p in fetched)
    assert not any(p.endswith(".raw") for p in fetched)


def test_gitlab_lint_job_comments_then_fails_on_a_refused_recipe(
    tmp_path: Path, world: World, catalog_server: Server, api: FakeApi
) -> None:
    checkout = vo_checkout(tmp_path, world)
    recipe = checkout / "recipes" / "atlas-wn-debian12.yaml"
    recipe.write_text(recipe.read_text().replace("fs_access: [nfs]", "fs_access: [nfs, none]"))
    job = gitlab_jobs()["imagefactory-lint"]
    run = Runner(tmp_path, checkout).run(job, gitlab_mr_env(api, catalog_server.url))
    assert run.code != 0
    [note] = api.posts()
    [body] = note.form()["body"]
    assert "would be refused" in body
    assert "atlas-wn-debian12.yaml:" in body  # the finding names the place


def github_lint_run(
    tmp_path: Path, world: World, catalog_server: Server, api: FakeApi, head_repository: str
) -> tuple[Path, Path]:
    """Run the GitHub lint job for a pull request from ``head_repository``."""
    checkout = vo_checkout(tmp_path, world)
    publish_previous(world, RECIPES / "atlas-wn-debian12.yaml")
    job = github_jobs()["lint"]
    summary = tmp_path / "step-summary.md"
    env = {
        "GITHUB_ACTIONS": "true",
        "CI": "true",
        "GITHUB_API_URL": api.url,
        "GITHUB_REPOSITORY": "atlas/recipes",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    expressions = {
        "vars.IMAGEFACTORY_CATALOG_URL": catalog_server.url,
        "github.token": "gh-token",
        "github.event.pull_request.number": "7",
        "github.event.pull_request.head.repo.full_name": head_repository,
    }
    run = Runner(tmp_path, checkout).run(job, env, expressions)
    assert_every_command_ran(job, run)
    return checkout, summary


def test_github_lint_job(
    tmp_path: Path, world: World, catalog_server: Server, api: FakeApi
) -> None:
    checkout, summary = github_lint_run(tmp_path, world, catalog_server, api, "atlas/recipes")
    [comment] = api.posts()
    assert comment.path == "/repos/atlas/recipes/issues/7/comments"
    assert comment.headers["authorization"] == "Bearer gh-token"
    assert json.loads(comment.body) == {"body": (checkout / "lint.md").read_text()}
    assert "| wget | 1.0-1 | - | removed |" in json.loads(comment.body)["body"]
    assert summary.read_text() == (checkout / "lint.md").read_text()


def test_github_lint_job_from_a_fork_reports_in_the_summary_not_a_comment(
    tmp_path: Path, world: World, catalog_server: Server, api: FakeApi
) -> None:
    """A fork's pull request gets a read-only token: commenting would fail the job."""
    checkout, summary = github_lint_run(tmp_path, world, catalog_server, api, "someone/recipes")
    assert api.posts() == []
    assert "| wget | 1.0-1 | - | removed |" in summary.read_text()
    assert summary.read_text() == (checkout / "lint.md").read_text()


# -- sign keyless and publish on the default branch -----------------------------------


def built_images(checkout: Path) -> Path:
    """What the build jobs hand on as artifacts: images/<name>/<version>/ (unsigned)."""
    name = "atlas-wn-debian12"
    return make_image(checkout / "images" / name, "1.0", edit=fresh(name, "1.0", "atlas"))


def delegated_vo_key(tmp_path: Path, world: World) -> Path:
    """The VO's catalog key, delegated the VO's role by the catalog owner."""
    key = new_key(tmp_path, "atlas-catalog-key")
    from imagefactory.catalog.ops import delegate
    from imagefactory.catalog.repo import load_public_keys

    delegate(world.catalog, "atlas", load_public_keys([Path(f"{key}.pub")]))
    return key


def check_published(world: World, sigstore_dir: Path, registry_host: str) -> None:
    """The image is in the catalog, in the registry, and verifies keyless as the CI job."""
    catalog = Catalog(world.catalog.directory)
    from imagefactory.catalog.ops import list_images

    images = list_images(catalog)["images"]
    assert [(i["path"], i["role"]) for i in images] == [
        ("atlas/atlas-wn-debian12/1.0.json", "vo.atlas")
    ]
    published = world.catalog.directory / "images/atlas/atlas-wn-debian12/1.0"
    [bundle] = published.glob("*.sigstore.json")
    [root] = sigstore_dir.glob("trusted-root-*.json")
    spec: dict[str, Any] = {"identity": CI_IDENTITY, "issuer": ISSUER, "trust_root": str(root)}
    policy = write_policy(
        sigstore_dir / "site.yaml", {"atlas": vo_rules({"name": "atlas-ci", "sigstore": spec})}
    )
    verdict = verify_image(published, load_policy(policy), VerifyOptions())
    assert verdict.allowed, verdict.render()
    descriptor = json.loads(
        next(
            (world.catalog.directory / "targets/atlas/atlas-wn-debian12").glob("*.1.0.json")
        ).read_text()
    )
    assert descriptor["oci_manifest"].startswith(f"{registry_host}/atlas/atlas-wn-debian12@sha256:")
    assert bundle.is_file()
    # Published with --no-page, then one render: the page shows the matrix's images.
    page = (world.catalog.directory / "index.html").read_text(encoding="utf-8")
    assert "atlas-wn-debian12" in page


def test_gitlab_publish_job(
    tmp_path: Path,
    world: World,
    auth_registry: str,  # noqa: F811 -- the fixture imported above
) -> None:
    checkout = vo_checkout(tmp_path, world)
    built_images(checkout)
    key = delegated_vo_key(tmp_path, world)
    sigstore_dir = tmp_path / "sigstore"
    job = gitlab_jobs()["imagefactory-publish"]
    assert job.spec["id_tokens"] == {"SIGSTORE_ID_TOKEN": {"aud": "sigstore"}}
    env = {
        "GITLAB_CI": "true",
        "CI": "true",
        "CI_COMMIT_BRANCH": "main",
        "CI_DEFAULT_BRANCH": "main",
        # What GitLab puts in the job for id_tokens: SIGSTORE_ID_TOKEN (aud sigstore).
        "SIGSTORE_ID_TOKEN": str(PrivateSigstore.token(CI_IDENTITY, ISSUER)),
        "IMAGEFACTORY_VO_KEY": str(key),  # a File variable: its path
        "IMAGEFACTORY_CATALOG_DIR": str(world.catalog.directory),
        # The template's default registry: the project's own, with the job's credentials.
        "CI_REGISTRY_IMAGE": f"{auth_registry}/atlas",
        "CI_REGISTRY_USER": USER,
        "CI_REGISTRY_PASSWORD": PASSWORD,
        "IMAGEFACTORY_TEST_SIGSTORE": str(sigstore_dir),
    }
    run = Runner(tmp_path, checkout).run(job, env)
    assert_every_command_ran(job, run)
    check_published(world, sigstore_dir, auth_registry)


def test_github_publish_job(
    tmp_path: Path,
    world: World,
    api: FakeApi,
    auth_registry: str,  # noqa: F811 -- the fixture imported above
) -> None:
    checkout = vo_checkout(tmp_path, world)
    built_images(checkout)
    key = delegated_vo_key(tmp_path, world)
    sigstore_dir = tmp_path / "sigstore"
    api.oidc_token = str(PrivateSigstore.token(CI_IDENTITY, ISSUER))
    job = github_jobs()["publish"]
    assert job.spec["permissions"]["id-token"] == "write"
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    env = {
        "GITHUB_ACTIONS": "true",
        "CI": "true",
        "RUNNER_TEMP": str(runner_temp),
        # What GitHub gives a job with permissions: id-token: write.
        "ACTIONS_ID_TOKEN_REQUEST_URL": f"{api.url}/oidc/token",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": api.request_token,
        "IMAGEFACTORY_TEST_SIGSTORE": str(sigstore_dir),
    }
    expressions = {
        "vars.IMAGEFACTORY_CATALOG_DIR": str(world.catalog.directory),
        "vars.IMAGEFACTORY_REGISTRY": f"{auth_registry}/atlas",
        "secrets.IMAGEFACTORY_VO_KEY": Path(key).read_text(),
        "secrets.IMAGEFACTORY_REGISTRY_USER": USER,
        "secrets.IMAGEFACTORY_REGISTRY_PASSWORD": PASSWORD,
    }
    run = Runner(tmp_path, checkout).run(job, env, expressions)
    assert_every_command_ran(job, run)
    [token_request] = [r for r in api.requests if r.path == "/oidc/token"]
    assert token_request.query["audience"] == ["sigstore"]
    check_published(world, sigstore_dir, auth_registry)

"""What the apps run on the local provider is loaded per drilled app, the first time a drill of it is
made: `-k pelican` builds pelican's images, not the repo's. A platform image (the real MariaDB) is
used only for a container that names exactly that image; a look-alike gets a stand-in, and the
report says which app it belongs to and that no database runs in it. No cluster: a fake provider
records what would have been loaded, and the builds are fakes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

import fixtures.drills as drills
from restoredrill.catalogue import App, Catalogue
from restoredrill.config import DrillConfig
from restoredrill.drill.namespace import NamespaceDrill
from restoredrill.drill.plan import plan_app
from restoredrill.errors import ConfigError
from restoredrill.images.standins import StandIn, app_images, canonical_reference
from restoredrill.platform.images import MARIADB_REFERENCE, platform_image_set
from tests.conftest import PROJECT_ROOT, RepoCopy, user_project

pytest_plugins = ("pytester",)

PELICAN = "ghcr.io/pelican-dev/panel:v1.0.0-beta21"
PRICEBUDDY = "docker.io/jez500/pricebuddy:v1.0.0"
DATABASE_YAML = "kubernetes/apps/pricebuddy/pricebuddy/app/database.yaml"


def app(catalogue: Catalogue, name: str) -> App:
    return next(a for a in catalogue.apps if a.name == name)


class FakeProvider:
    """Records what `load_images` was given, one call a list of image names."""

    def __init__(self) -> None:
        self.loads: list[list[str]] = []

    def load_images(self, images: dict[str, Path]) -> None:
        self.loads.append(sorted(images))

    @property
    def loaded(self) -> list[str]:
        return sorted(name for load in self.loads for name in load)


class FakeBuilds:
    """Stand-ins for `build_standin_images` and `build_local_images`: what each was asked to build."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.standins: list[StandIn] = []
        self.platform: list[str] = []

    def build_standins(self, standins: Iterable[StandIn], **_: Any) -> dict[str, Path]:
        built = list(standins)
        self.standins += built
        return {s.reference: self.root / f"{len(self.standins)}.tar" for s in built}

    def build_platform(self, names: Iterable[str] = (), **_: Any) -> dict[str, Path]:
        built = list(names)
        self.platform += built
        return {name: self.root / f"{name}.tar" for name in built}


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeBuilds:
    fake = FakeBuilds(tmp_path)
    monkeypatch.setattr(drills, "build_standin_images", fake.build_standins)
    monkeypatch.setattr(drills, "build_local_images", fake.build_platform)
    monkeypatch.setenv("RESTOREDRILL_CACHE", str(tmp_path / "cache"))  # where the loader's lock lives
    return fake


GITOPS_STANDINS = ("StorageClass fast: alias of the default class local-path",)


class FakeGitOps:
    def __init__(self) -> None:
        self.standins = list(GITOPS_STANDINS)

    def app_standins(self, kustomizations: object) -> list[str]:
        return self.standins

    def out(self, line: str) -> None:
        pass


def factory(catalogue: Catalogue, provider: FakeProvider) -> Callable[[App], NamespaceDrill]:
    """The namespace drills' factory as the fixtures wire it, with inert platform parts."""
    made: list[NamespaceDrill] = []
    images = platform_image_set("local")
    loader = drills.app_image_loader(cast(Any, provider), catalogue, images, out=lambda line: None)
    inert = cast(Any, object())
    config = DrillConfig(gitops_repo=PROJECT_ROOT, reports_dir=PROJECT_ROOT / "reports")
    ctx = cast(Any, SimpleNamespace(cluster=SimpleNamespace(notes=())))
    return drills._factory(cast(Any, FakeGitOps()), ctx, inert, inert, inert, catalogue, "run1", images, loader,
                           made, config)


# ---- only the drilled apps ---------------------------------------------------------------------
def test_a_drill_loads_only_its_apps_images(example_catalogue: Catalogue, builds: FakeBuilds) -> None:
    provider = FakeProvider()
    make = factory(example_catalogue, provider)
    drill = make(app(example_catalogue, "pelican"))
    assert provider.loaded == [PELICAN]
    assert [s.reference for s in builds.standins] == [PELICAN]
    assert builds.platform == []
    assert drill.record.standins == [*GITOPS_STANDINS,
                                     f"app pelican: image {PELICAN} is a restoredrill stand-in serving ports 80"]


def test_an_apps_images_are_loaded_once_per_session(example_catalogue: Catalogue, builds: FakeBuilds) -> None:
    provider = FakeProvider()
    make = factory(example_catalogue, provider)
    first = make(app(example_catalogue, "pelican"))
    again = make(app(example_catalogue, "pelican"))  # a second drill of the app (a fault test, CNPG options)
    assert provider.loads == [[PELICAN]]
    assert again.record.standins == first.record.standins


def test_the_platform_mariadb_is_loaded_for_the_app_that_names_it(example_catalogue: Catalogue,
                                                                  builds: FakeBuilds) -> None:
    provider = FakeProvider()
    drill = factory(example_catalogue, provider)(app(example_catalogue, "pricebuddy"))
    assert builds.platform == ["mariadb"]
    assert MARIADB_REFERENCE not in [s.reference for s in builds.standins]
    assert provider.loaded == sorted(["mariadb", PRICEBUDDY])
    assert f"app pricebuddy: image {MARIADB_REFERENCE} is the platform's mariadb image, built locally" in (
        drill.record.standins)


def test_a_cnpg_app_gets_no_database_image_of_its_own(example_catalogue: Catalogue, builds: FakeBuilds) -> None:
    # CNPG runs the platform's PostgreSQL (loaded with the platform) from Cluster.spec.imageName.
    provider = FakeProvider()
    factory(example_catalogue, provider)(app(example_catalogue, "immich"))
    assert builds.platform == []
    assert provider.loaded == ["ghcr.io/immich-app/immich-server:v1.132.3"]


def test_an_app_that_fails_to_plan_loads_nothing(example_repo: RepoCopy, builds: FakeBuilds) -> None:
    schedule = next(p for p in example_repo.root.rglob("*.yaml") if "includedNamespaces" in p.read_text()
                    and "- pelican" in p.read_text())
    example_repo.replace(str(schedule.relative_to(example_repo.root)), "- pelican", "- someone-else")
    catalogue = example_repo.catalogue()
    provider = FakeProvider()
    with pytest.raises(ConfigError, match="no Velero Schedule"):
        factory(catalogue, provider)(app(catalogue, "pelican"))
    assert provider.loads == []


CONFTEST = """
import json
from pathlib import Path

import pytest

import fixtures.drills as drills
from restoredrill.cluster import ClusterHandle
from restoredrill.drill.namespace import NamespaceDrill

RECORD = Path(__file__).resolve().parents[2] / "record.jsonl"


def _write(**entry):
    with RECORD.open("a") as out:
        out.write(json.dumps(entry) + "\\n")


class Provider:
    name = "local"

    def load_images(self, images):
        _write(loaded=sorted(images))


@pytest.fixture(scope="session")
def cluster_provider():
    return Provider()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    return ClusterHandle(provider="local", name="fake", kubeconfig=tmp_path_factory.mktemp("k") / "kubeconfig",
                         context=None, created_by_us=True)


@pytest.fixture(scope="session")
def platform_images():
    from restoredrill.platform.images import platform_image_set

    return platform_image_set("local")


class GitOps:
    standins = []
    worker_id = "master"
    app_standins = staticmethod(lambda kustomizations: [])
    out = staticmethod(print)


@pytest.fixture(scope="session")
def gitops_deployment():
    return GitOps()


@pytest.fixture(scope="session")
def platform_context(cluster):
    from types import SimpleNamespace

    return SimpleNamespace(cluster=cluster)


@pytest.fixture(scope="session")
def velero():
    return object()


flux = cnpg = velero


@pytest.fixture(autouse=True)
def fake_builds_and_runs(monkeypatch):
    monkeypatch.setattr(drills, "build_standin_images", lambda standins: {s.reference: Path("x") for s in standins})
    monkeypatch.setattr(drills, "build_local_images", lambda names: {n: Path("x") for n in names})
    monkeypatch.setattr(NamespaceDrill, "run", lambda self: _write(app=self.plan.app, standins=self.record.standins))
"""


def test_k_selects_whose_images_a_session_loads(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real suite and fixtures, with the cluster, the platform and the drill's steps faked:
    `-k "pelican or pricebuddy"` loads those two apps' images and no other app's."""
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    monkeypatch.setenv("RESTOREDRILL_CACHE", str(pytester.path / "cache"))
    user_project(pytester.path)
    (pytester.path / "suites" / "drills" / "conftest.py").write_text(CONFTEST)
    # The existing provider with no kubeconfig: were a fake not in effect, nothing could reach a cluster.
    result = pytester.runpytest_subprocess("suites/drills/test_namespace_restore.py", "--gitops-repo", "repo",
                                           "--cluster-provider", "existing", "--cluster-kubeconfig",
                                           str(pytester.path / "absent"), "-k", "pelican or pricebuddy",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    entries = [json.loads(line) for line in (pytester.path / "record.jsonl").read_text().splitlines()]
    loaded = sorted(name for entry in entries for name in entry.get("loaded", []))
    assert loaded == sorted([PELICAN, PRICEBUDDY, "mariadb"])
    standins = {entry["app"]: entry["standins"] for entry in entries if "app" in entry}
    assert standins["pelican"] == [f"app pelican: image {PELICAN} is a restoredrill stand-in serving ports 80"]
    assert all(line.startswith("app pricebuddy: ") for line in standins["pricebuddy"])


# ---- a look-alike is the app's image -----------------------------------------------------------
@pytest.mark.parametrize(("image", "canonical"), [
    ("mariadb:11.4.5", "docker.io/library/mariadb:11.4.5"),
    ("docker.io/library/mariadb:11.4.5", "docker.io/library/mariadb:11.4.5"),
    ("index.docker.io/library/mariadb:11.4.5", "docker.io/library/mariadb:11.4.5"),
    ("bitnami/postgresql:16", "docker.io/bitnami/postgresql:16"),
    ("mariadb", "docker.io/library/mariadb:latest"),
    ("ghcr.io/someone/mariadb:11", "ghcr.io/someone/mariadb:11"),
    ("registry.local:5000/mariadb", "registry.local:5000/mariadb:latest"),
    ("localhost/app:1", "localhost/app:1"),
    ("mariadb@sha256:" + "a" * 64, "docker.io/library/mariadb@sha256:" + "a" * 64),
    # cypr0/k8s-cluster's paperless: ErrImagePull, the stand-in was kept under the tagged name.
    ("ghcr.io/paperless-ngx/paperless-ngx:2.17.1@sha256:" + "b" * 64,
     "ghcr.io/paperless-ngx/paperless-ngx@sha256:" + "b" * 64),
    ("registry.local:5000/team/app:1@sha256:" + "c" * 64, "registry.local:5000/team/app@sha256:" + "c" * 64),
    ("app:1@sha256:" + "d" * 64, "docker.io/library/app@sha256:" + "d" * 64),
])
def test_canonical_reference_is_the_name_containerd_keeps(image: str, canonical: str) -> None:
    assert canonical_reference(image) == canonical


@pytest.mark.parametrize("image", ["ghcr.io/someone/mariadb:11", "mariadb:10.6", "docker.io/library/mariadb:11.4",
                                   "docker.io/library/mariadb:11.4.5@sha256:" + "b" * 64,
                                   "docker.io/bitnami/mariadb:11.4.5"])
def test_a_mariadb_look_alike_gets_a_stand_in_not_the_platform_recipe(example_repo: RepoCopy, image: str) -> None:
    example_repo.replace(DATABASE_YAML, f"image: {MARIADB_REFERENCE}", f"image: {image}")
    catalogue = example_repo.catalogue()
    pricebuddy = app(catalogue, "pricebuddy")
    images = app_images(catalogue, pricebuddy, platform=platform_image_set("local"))
    assert "mariadb" not in images.platform
    assert canonical_reference(image) in [s.reference for s in images.standins]
    line = next(line for line in images.disclosures if canonical_reference(image) in line)
    assert line.startswith(f"app pricebuddy: image {canonical_reference(image)} is a restoredrill stand-in serving "
                           "ports 3306; it looks like a mysql database image, but it is not the platform's mariadb "
                           f"image ({MARIADB_REFERENCE}), so no database server runs in it")
    assert "MySQL steps" in line
    # Database detection is unchanged: the drill still plans the container as an in-pod MySQL.
    assert [db.container for db in plan_app(catalogue, pricebuddy).mysql] == ["mariadb"]


def test_the_short_name_of_the_platform_image_is_the_platform_image(example_repo: RepoCopy) -> None:
    # `mariadb:11.4.5` is docker.io/library/mariadb:11.4.5 to containerd: a stand-in under that name
    # would replace the real MariaDB another app runs.
    example_repo.replace(DATABASE_YAML, f"image: {MARIADB_REFERENCE}", "image: mariadb:11.4.5")
    catalogue = example_repo.catalogue()
    images = app_images(catalogue, app(catalogue, "pricebuddy"), platform=platform_image_set("local"))
    assert images.platform == ("mariadb",)
    assert [s.reference for s in images.standins] == [PRICEBUDDY]


def test_a_postgresql_look_alike_is_stood_in_and_said_to_be_files_only(example_repo: RepoCopy) -> None:
    example_repo.replace(DATABASE_YAML, f"image: {MARIADB_REFERENCE}", "image: docker.io/bitnami/postgresql:16")
    catalogue = example_repo.catalogue()
    images = app_images(catalogue, app(catalogue, "pricebuddy"), platform=platform_image_set("local"))
    assert images.platform == ()
    line = next(line for line in images.disclosures if "bitnami/postgresql" in line)
    assert line == ("app pricebuddy: image docker.io/bitnami/postgresql:16 is a restoredrill stand-in serving ports "
                    "3306; it looks like a postgresql database image, but it is not the platform's postgresql image "
                    f"({platform_image_set('local')['postgresql']}), so no database server runs in it: its volumes "
                    "are verified as files only")


def test_a_stand_in_is_the_same_whichever_app_is_drilled_first(example_repo: RepoCopy) -> None:
    # pelican and gatus run one image on different ports: each app's stand-in serves both.
    example_repo.replace("kubernetes/apps/gatus/gatus/app/deployment.yaml", "image: ghcr.io/twin/gatus:v5.17.0",
                         f"image: {PELICAN}")
    catalogue = example_repo.catalogue()
    platform = platform_image_set("local")
    pelican = app_images(catalogue, app(catalogue, "pelican"), platform=platform).standins
    gatus = app_images(catalogue, app(catalogue, "gatus"), platform=platform).standins
    assert pelican == gatus == (StandIn(PELICAN, (80, 8080)),)

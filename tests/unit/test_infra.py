"""The deployment manifests under infra/ parse, carry their required fields, agree with the
package and with each other (one image name, the same pins, Ray's version, a real job file), and
hold no literal password or token. No Docker engine or Kubernetes runs here: KubeRay resources
are checked by their required fields, the cluster launcher config against Ray's own schema."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
CLUSTER_YAML = INFRA / "ray" / "cluster.yaml"
RAYCLUSTER = INFRA / "kuberay" / "raycluster.yaml"
RAYJOB = INFRA / "kuberay" / "rayjob.yaml"
COMPOSE = INFRA / "mlflow" / "docker-compose.yaml"
MLFLOW_DOCKERFILE = INFRA / "mlflow" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGE = f"reprlab/platform:{PYPROJECT['project']['version']}"
"""The one platform image name: every manifest runs it, the Dockerfile's labels spell it."""

SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "KEY")
REQUIRED_VARIABLE = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*:\?[^}]+\}$")
LOCALHOST_PORT = re.compile(r"^(127\.0\.0\.1|\$\{[A-Z_][A-Z0-9_]*:-127\.0\.0\.1\}):\d+:\d+$")

RAYCLUSTER_SPEC_FIELDS = (
    "rayVersion",
    "headGroupSpec.template.spec.containers",
    "workerGroupSpecs",
)


def load_yaml(path: Path) -> Any:
    """One YAML document, parsed safely (anchors and aliases resolved)."""
    return yaml.safe_load(path.read_text())


def dig(doc: Any, dotted: str) -> Any:
    """`dig(doc, "spec.rayVersion")`; None where any step is missing."""
    for key in dotted.split("."):
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def missing_fields(doc: Any, fields: tuple[str, ...]) -> list[str]:
    """The dotted fields that are absent, None or empty in `doc`."""
    return [field for field in fields if dig(doc, field) in (None, "", [], {})]


def walk(doc: Any) -> Iterator[Any]:
    """Every dict, list and scalar inside a parsed YAML tree, depth first."""
    yield doc
    children = doc.values() if isinstance(doc, dict) else doc if isinstance(doc, list) else ()
    for child in children:
        yield from walk(child)


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


def dockerfile_pins(text: str) -> dict[str, str]:
    """Package name -> exact version for every `name==version` a `pip install` RUN names."""
    pins = {}
    for keyword, arguments in dockerfile_instructions(text):
        if keyword != "RUN" or "pip install" not in arguments:
            continue
        for token in shlex.split(arguments):
            if "==" in token:
                requirement = Requirement(token)
                pins[requirement.name.lower()] = str(requirement.specifier).removeprefix("==")
    return pins


def dockerfile_image(text: str) -> str:
    """`title:version` from the OCI labels: the name the image is built and pushed as."""
    labels = " ".join(args for keyword, args in dockerfile_instructions(text) if keyword == "LABEL")
    found = dict(re.findall(r'org\.opencontainers\.image\.(title|version)="([^"]+)"', labels))
    return f"{found.get('title')}:{found.get('version')}"


def final_user(text: str) -> str:
    """The user the image's processes run as: the last USER, or root when there is none."""
    users = [args for keyword, args in dockerfile_instructions(text) if keyword == "USER"]
    return users[-1] if users else "root"


def unpinned_bases(text: str) -> list[str]:
    """FROM images without a tag or on `latest`: a rebuild would silently change them."""
    bases = [
        args.split()[0] for keyword, args in dockerfile_instructions(text) if keyword == "FROM"
    ]
    return [base for base in bases if ":" not in base or base.endswith(":latest")]


def pin_mismatches(pins: dict[str, str], requirements: list[str]) -> list[str]:
    """Pyproject requirements the Dockerfile leaves unpinned or pins differently: an exact pin
    must be copied as is, a range pinned to the version installed here (and inside the range)."""
    problems = []
    for line in requirements:
        requirement = Requirement(line)
        name = requirement.name.lower()
        exact = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        wanted = exact[0] if exact else version(name)
        if name not in pins:
            problems.append(f"{name}: not pinned in the Dockerfile")
        elif pins[name] != wanted or not requirement.specifier.contains(pins[name]):
            problems.append(f"{name}: Dockerfile {pins[name]}, expected {wanted} ({line})")
    return problems


def test_dockerfile_pins_equal_pyproject() -> None:
    core = [
        line
        for line in PYPROJECT["project"]["dependencies"]
        if Requirement(line).name in ("torch", "torchvision", "ray", "mlflow")
    ]
    assert len(core) == 4
    assert pin_mismatches(dockerfile_pins(DOCKERFILE.read_text()), core) == []
    assert dockerfile_pins(DOCKERFILE.read_text())["ray"] == version("ray")


def test_a_drifted_pin_is_named() -> None:
    pins = dockerfile_pins('RUN pip install "torch==2.13.0" \\\n    "ray[default]==2.60.0"\n')
    assert pins == {"torch": "2.13.0", "ray": "2.60.0"}
    problems = pin_mismatches(pins, ["torch==2.14.1", "mlflow>=3.16.1"])
    assert problems == [
        "torch: Dockerfile 2.13.0, expected 2.14.1 (torch==2.14.1)",
        "mlflow: not pinned in the Dockerfile",
    ]


def test_dockerfile_builds_the_platform_image_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert dockerfile_image(text) == IMAGE
    assert final_user(text) not in ("root", "0", "root:root", "0:0")
    assert unpinned_bases(text) == []
    assert any(
        "cuda" in args and "cudnn" in args
        for kw, args in dockerfile_instructions(text)
        if kw == "FROM"
    )
    assert any(kw == "WORKDIR" for kw, _ in dockerfile_instructions(text))
    assert "python3.11 -m venv" in text
    assert re.search(r"pip install \.(\s|$)", text), "the image installs the package itself"


def test_a_root_or_unpinned_image_is_caught() -> None:
    text = "FROM nvidia/cuda:latest\nFROM ubuntu\nUSER ray\nRUN true\nUSER root\n"
    assert final_user(text) == "root"
    assert final_user("FROM python:3.11-slim\n") == "root"
    assert unpinned_bases(text) == ["nvidia/cuda:latest", "ubuntu"]
    assert (
        dockerfile_image('LABEL org.opencontainers.image.title="x/y" \\\n  a="b"\n') == "x/y:None"
    )


def test_build_context_leaves_the_virtualenv_out() -> None:
    ignored = (INFRA / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert {".venv/", ".git/", "**/auth_token"} <= set(ignored)


# --- Ray cluster launcher --------------------------------------------------------------------


def ray_schema_errors(config: dict) -> list[str]:
    """Where `config` breaks the schema `ray up` itself validates against."""
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [error.message for error in validator.iter_errors(config)]


def node_type_problems(config: dict) -> list[str]:
    """A head type that is not declared, or a node type whose bounds are inverted or exceed the
    cluster's max_workers."""
    types = config.get("available_node_types") or {}
    problems = [] if config.get("head_node_type") in types else ["head_node_type is not declared"]
    for name, node in types.items():
        low, high = node.get("min_workers", 0), node.get("max_workers", config["max_workers"])
        if not low <= high <= config["max_workers"]:
            problems.append(f"{name}: min_workers {low}, max_workers {high}")
    return problems


def test_cluster_yaml_has_head_cpu_and_gpu_types_within_bounds() -> None:
    config = load_yaml(CLUSTER_YAML)
    assert missing_fields(config, ("cluster_name", "max_workers", "provider.type")) == []
    assert ray_schema_errors(config) == []
    assert node_type_problems(config) == []
    workers = {
        n: t for n, t in config["available_node_types"].items() if n != config["head_node_type"]
    }
    assert any("gpu" in name for name in workers) and any("cpu" in name for name in workers)
    assert all("max_workers" in node for node in workers.values())


def test_a_broken_cluster_yaml_is_caught() -> None:
    config = {
        "cluster_name": "x",
        "max_workers": 2,
        "provider": {"type": "aws"},
        "head_node_type": "head",
        "available_node_types": {
            "cpu": {"min_workers": 3, "max_workers": 1, "resources": {}, "node_config": {}},
        },
        "start_commands": [],
    }
    assert node_type_problems(config) == [
        "head_node_type is not declared",
        "cpu: min_workers 3, max_workers 1",
    ]
    assert any("start_commands" in message for message in ray_schema_errors(config))


def test_cluster_yaml_installs_the_package_and_starts_ray_with_token_auth() -> None:
    config = load_yaml(CLUSTER_YAML)
    assert any("pip install" in command for command in config["setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(command for command in config[key] if "ray start" in command)
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN_PATH=" in start
        assert "0.0.0.0" not in start, "the dashboard stays on the head's 127.0.0.1"
    assert "/home/ray/.ray/auth_token" in config["file_mounts"]


# --- KubeRay ---------------------------------------------------------------------------------


def replica_problems(groups: list[dict]) -> list[str]:
    """Worker groups without a name or whose replicas sit outside minReplicas..maxReplicas."""
    problems = []
    for group in groups:
        name = group.get("groupName", "<unnamed>")
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        replicas = group.get("replicas", low)
        if "groupName" not in group or None in (low, high) or not low <= replicas <= high:
            problems.append(f"{name}: replicas {replicas}, bounds [{low}, {high}]")
    return problems


def raycluster_spec_problems(spec: dict) -> list[str]:
    """What a RayCluster spec (also a RayJob's rayClusterSpec) lacks or gets wrong."""
    import ray

    problems = missing_fields(spec, RAYCLUSTER_SPEC_FIELDS)
    if spec.get("rayVersion") != ray.__version__:
        problems.append(f"rayVersion {spec.get('rayVersion')!r}, installed Ray {ray.__version__}")
    problems += replica_problems(spec.get("workerGroupSpecs") or [])
    for group in spec.get("workerGroupSpecs") or []:
        problems += [
            f"worker group: {f}" for f in missing_fields(group, ("template.spec.containers",))
        ]
    return problems


def test_raycluster_has_its_required_fields() -> None:
    doc = load_yaml(RAYCLUSTER)
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    assert missing_fields(doc, ("metadata.name",)) == []
    assert raycluster_spec_problems(doc["spec"]) == []
    groups = {group["groupName"]: group for group in doc["spec"]["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] >= 1


def test_rayjob_runs_a_reprlab_job_and_cleans_up() -> None:
    doc = load_yaml(RAYJOB)
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    assert missing_fields(doc, ("metadata.name", "spec.entrypoint", "spec.rayClusterSpec")) == []
    assert doc["spec"]["shutdownAfterJobFinishes"] is True
    assert isinstance(doc["spec"].get("ttlSecondsAfterFinished"), int)
    assert raycluster_spec_problems(doc["spec"]["rayClusterSpec"]) == []
    assert entrypoint_problems(doc["spec"]["entrypoint"]) == []
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    workdir = [args for keyword, args in instructions if keyword == "WORKDIR"][-1]
    assert yaml.safe_load(doc["spec"]["runtimeEnvYAML"])["working_dir"] == workdir
    assert ("COPY", "--chown=ray:ray jobs/ jobs/") in instructions, "job paths resolve there"


def test_a_broken_raycluster_spec_is_caught() -> None:
    spec = {
        "rayVersion": "2.9.0",
        "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {}}},
        "workerGroupSpecs": [{"groupName": "cpu", "minReplicas": 4, "maxReplicas": 2}],
    }
    problems = raycluster_spec_problems(spec)
    assert "headGroupSpec.template.spec.containers" in problems
    assert any(p.startswith("rayVersion '2.9.0'") for p in problems)
    assert "cpu: replicas 4, bounds [4, 2]" in problems
    assert "worker group: template.spec.containers" in problems


def entrypoint_problems(entrypoint: str, root: Path = ROOT) -> list[str]:
    """An entrypoint that is not `reprlab run <job file under jobs/>`, or whose job fails to
    validate: the RayJob would start a cluster only to fail on its first line."""
    from reprlab.config import ConfigError, load_job

    words = shlex.split(entrypoint)
    if words[:2] != ["reprlab", "run"] or "reprlab" not in PYPROJECT["project"]["scripts"]:
        return [f"not a `reprlab run` command: {entrypoint}"]
    if len(words) < 3 or not words[2].startswith("jobs/"):
        return [f"no job file under jobs/: {entrypoint}"]
    path = root / words[2]
    if not path.is_file():
        return [f"{words[2]} does not exist"]
    try:
        load_job(path, words[3:])
    except ConfigError as error:
        return [str(error)]
    return []


def test_a_wrong_entrypoint_is_caught() -> None:
    assert entrypoint_problems("python train.py") == [
        "not a `reprlab run` command: python train.py"
    ]
    assert entrypoint_problems("reprlab run /tmp/x.yaml") == [
        "no job file under jobs/: reprlab run /tmp/x.yaml"
    ]
    assert entrypoint_problems("reprlab run jobs/nope.yaml") == ["jobs/nope.yaml does not exist"]
    assert entrypoint_problems("reprlab run jobs/quickstart.yaml optim.nonsense=1") != []


def secret_refs(doc: Any) -> dict[str, tuple[str, str]]:
    """Env var -> (Secret, key) for every secretKeyRef in a manifest."""
    return {
        item["name"]: (ref["name"], ref["key"])
        for item in walk(doc)
        if isinstance(item, dict) and (ref := dig(item, "valueFrom.secretKeyRef"))
    }


def test_raycluster_and_rayjob_read_the_same_secret() -> None:
    cluster, job = secret_refs(load_yaml(RAYCLUSTER)), secret_refs(load_yaml(RAYJOB))
    assert cluster == job
    for name in ("RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_PASSWORD"):
        assert name in cluster
    assert "REPRLAB_STORAGE_PATH" in cluster, "the s3:// storage path comes from the Secret"
    assert {secret for secret, _ in cluster.values()} == {"reprlab-platform"}


# --- one image everywhere --------------------------------------------------------------------


def image_references(doc: Any) -> list[str]:
    """Every container image a manifest names (`image`, and the launcher's head/worker images)."""
    keys = ("image", "head_image", "worker_image")
    return [
        value
        for item in walk(doc)
        if isinstance(item, dict)
        for key, value in item.items()
        if key in keys and isinstance(value, str)
    ]


def test_every_manifest_runs_the_platform_image() -> None:
    assert dockerfile_image(DOCKERFILE.read_text()) == IMAGE
    for path in (CLUSTER_YAML, RAYCLUSTER, RAYJOB):
        images = image_references(load_yaml(path))
        assert images and set(images) == {IMAGE}, f"{path.name}: {images}"
    assert len(image_references(load_yaml(RAYJOB))) == 4, "head, cpu, gpu and the submitter"


def test_another_image_is_caught() -> None:
    doc = {"spec": {"containers": [{"image": IMAGE}, {"image": "rayproject/ray:2.60.0"}]}}
    assert image_references(doc) == [IMAGE, "rayproject/ray:2.60.0"]
    assert image_references({"docker": {"image": "a", "worker_image": "b"}}) == ["a", "b"]


# --- no literal secrets ----------------------------------------------------------------------


def is_secret_name(name: str) -> bool:
    """Env var names that hold credentials; *_PATH and *_FILE name where one is, not its value."""
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS) and not upper.endswith(("_PATH", "_FILE"))


def env_entries(doc: Any) -> Iterator[tuple[str, Any]]:
    """(name, value) for Kubernetes env items ({name, value|valueFrom}) and compose
    `environment:` mappings or lists; a valueFrom is returned as the dict it is."""
    for item in walk(doc):
        if isinstance(item, dict) and "name" in item and ("value" in item or "valueFrom" in item):
            yield item["name"], item.get("valueFrom", item.get("value"))
        if isinstance(item, dict) and isinstance(item.get("environment"), dict):
            yield from item["environment"].items()
        if isinstance(item, dict) and isinstance(item.get("environment"), list):
            for entry in item["environment"]:
                name, _, value = entry.partition("=")
                yield name, value


def shell_assignments(text: str) -> list[tuple[str, str]]:
    """`NAME=value` in shell commands, docker `--env`/`-e` options and Dockerfile ENV/ARG."""
    return re.findall(r"(?<![\w$-])([A-Z][A-Z0-9_]*)=(\"[^\"]*\"|'[^']*'|[^\s\\]*)", text)


def literal_secrets(entries: list[tuple[str, Any]]) -> list[str]:
    """Credential-named variables given anything but a secretKeyRef or a `${VAR:?...}` reference
    (`NAME=...` is the placeholder the usage comments show)."""
    problems = []
    for name, value in entries:
        if not is_secret_name(name) or value == "...":
            continue
        if isinstance(value, dict) and set(value) == {"secretKeyRef"}:
            continue
        if isinstance(value, str) and REQUIRED_VARIABLE.match(value):
            continue
        problems.append(f"{name}={value!r}")
    return problems


def defaulted_secrets(text: str) -> list[str]:
    """`${NAME:-default}` or `${NAME-default}` for a credential-named variable: a default."""
    return [
        match.group(0)
        for match in re.finditer(r"\$\{([A-Z_][A-Z0-9_]*):?-[^}]*\}", text)
        if is_secret_name(match.group(1))
    ]


def inline_credentials(text: str) -> list[str]:
    """`scheme://user:password@host` with a literal password in it."""
    return [
        match.group(0)
        for match in re.finditer(r"[a-z][a-z0-9+.-]*://[^\s:/@]+:([^\s@]+)@", text)
        if not REQUIRED_VARIABLE.match(match.group(1))
    ]


MANIFESTS = [CLUSTER_YAML, RAYCLUSTER, RAYJOB, COMPOSE]
TEXT_FILES = [DOCKERFILE, MLFLOW_DOCKERFILE, INFRA / "mlflow" / "basic_auth.ini"]


@pytest.mark.parametrize("path", MANIFESTS + TEXT_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_no_file_holds_a_literal_password_or_token(path: Path) -> None:
    text = path.read_text()
    entries = shell_assignments(text)
    if path.suffix == ".yaml":
        entries += list(env_entries(load_yaml(path)))
    assert literal_secrets(entries) == []
    assert defaulted_secrets(text) == []
    assert inline_credentials(text) == []
    assert not re.search(r"^\s*admin_password\s*=", text, re.MULTILINE)


def test_planted_secrets_are_caught() -> None:
    k8s = yaml.safe_load(
        "env:\n"
        "  - {name: RAY_AUTH_TOKEN, value: abc123}\n"
        "  - {name: MLFLOW_TRACKING_PASSWORD, valueFrom: {secretKeyRef: {name: s, key: k}}}\n"
        "  - {name: RAY_AUTH_TOKEN_PATH, value: /home/ray/.ray/auth_token}\n"
    )
    assert literal_secrets(list(env_entries(k8s))) == ["RAY_AUTH_TOKEN='abc123'"]
    compose = yaml.safe_load(
        "services:\n  db:\n    environment:\n"
        "      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-changeme}\n"
        "      MLFLOW_AUTH_ADMIN_PASSWORD: ${MLFLOW_ADMIN_PASSWORD:?set it}\n"
        "  app:\n    environment: [AWS_SECRET_ACCESS_KEY=minio123, MODE=x]\n"
    )
    assert literal_secrets(list(env_entries(compose))) == [
        "POSTGRES_PASSWORD='${POSTGRES_PASSWORD:-changeme}'",
        "AWS_SECRET_ACCESS_KEY='minio123'",
    ]
    assert defaulted_secrets("x: ${MINIO_ROOT_PASSWORD:-minio123} ${MLFLOW_BIND:-127.0.0.1}") == [
        "${MINIO_ROOT_PASSWORD:-minio123}"
    ]
    assert inline_credentials("--backend-store-uri=postgresql://mlflow:hunter2@db/mlflow") == [
        "postgresql://mlflow:hunter2@"
    ]
    assert inline_credentials("postgresql://mlflow@db/mlflow s3://bucket/x") == []
    assert literal_secrets(shell_assignments("ENV API_KEY=abc \\\n    MODE=1\n")) == [
        "API_KEY='abc'"
    ]
    assert literal_secrets(shell_assignments("RAY_AUTH_TOKEN=$(cat t) ray start")) != []


# --- MLflow compose stack --------------------------------------------------------------------


def exposed_ports(compose: dict) -> list[str]:
    """Published ports that bind beyond 127.0.0.1 by default (no host, or another address)."""
    problems = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                port = f"{port.get('host_ip', '')}:{port.get('published')}:{port.get('target')}"
            if not LOCALHOST_PORT.match(str(port)):
                problems.append(f"{name}: {port}")
    return problems


def test_compose_runs_mlflow_with_postgres_and_an_s3_store() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert {"mlflow", "postgres", "minio"} <= set(services)
    command = services["mlflow"]["command"]
    assert "--serve-artifacts" in command and "--app-name=basic-auth" in command
    assert any(arg.startswith("--backend-store-uri=postgresql://") for arg in command)
    assert any(arg.startswith("--artifacts-destination=s3://") for arg in command)
    environment = services["mlflow"]["environment"]
    assert REQUIRED_VARIABLE.match(environment["MLFLOW_AUTH_ADMIN_PASSWORD"])
    assert environment["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert exposed_ports(compose) == []
    assert all(service.get("image") for service in services.values())
    assert unpinned_bases("\n".join(f"FROM {s['image']}" for s in services.values())) == []


def test_compose_server_runs_the_platform_mlflow_version() -> None:
    pin = dockerfile_pins(MLFLOW_DOCKERFILE.read_text())["mlflow"]
    assert pin == dockerfile_pins(DOCKERFILE.read_text())["mlflow"] == version("mlflow")
    assert load_yaml(COMPOSE)["services"]["mlflow"]["image"].endswith(f":{pin}")
    assert final_user(MLFLOW_DOCKERFILE.read_text()) not in ("root", "0")


def test_a_port_open_to_all_is_caught() -> None:
    compose = {
        "services": {
            "a": {"ports": ["5000:5000", "${MLFLOW_BIND:-127.0.0.1}:9000:9000"]},
            "b": {
                "ports": ["0.0.0.0:8080:80", {"host_ip": "127.0.0.1", "published": 1, "target": 2}]
            },
        }
    }
    assert exposed_ports(compose) == ["a: 5000:5000", "b: 0.0.0.0:8080:80"]

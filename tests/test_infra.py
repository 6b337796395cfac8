"""What an operator deploys agrees with the code that runs.

infra/ (KubeRay manifests, the AWS cluster-launcher config, the Dockerfile),
the job's runtime environments in jobs/ and the commands in
docs/running-on-a-cluster.md are checked against the real thing: every
entrypoint's arguments are parsed by the job's own argument parser, the run
configuration is read by crossemo's config reader, the runtime environments
by Ray's, the launcher config against Ray's schema; image tags and
rayVersion carry the installed Ray's major.minor; Secrets are referenced the
same way everywhere and created by the documented commands; the schedule is
valid cron; and no credential is written into any file.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
import zoneinfo
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from packaging.requirements import Requirement
from ray.runtime_env import RuntimeEnv

import crossemo
from crossemo import cli, corpora, pipeline, protocol

from jobscript import load_job_script

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
DOCS = REPO / "docs" / "running-on-a-cluster.md"
RUNTIME_ENVS = [REPO / "jobs" / "runtime_env.yaml", REPO / "jobs" / "runtime_env.preinstalled.yaml"]
RAY_MINOR = ".".join(ray.__version__.split(".")[:2])
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# The Python of the images: the lowest the package supports (">=3.11" -> py311).
PY_TAG = "py" + re.sub(r"[^0-9.]", "", PYPROJECT["project"]["requires-python"]).replace(".", "")
KUBECTL_IMAGE = re.compile(r"^registry\.k8s\.io/kubectl:v\d+\.\d+\.\d+$")


JOB = load_job_script()


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml" for doc in _documents(path)]


def _one(kind: str, component: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (and of that ``app.kubernetes.io/component``, when given)."""
    found = [doc for doc in _k8s_objects() if doc["kind"] == kind and component in (None, doc["metadata"].get("labels", {}).get("app.kubernetes.io/component"))]
    assert len(found) == 1, f"expected one {kind}{f' of component {component}' if component else ''} in infra/k8s, found {len(found)}"
    return found[0]


RAYJOBS = {"study-run": "jobs/run.py", "predict-run": "jobs/predict.py"}
"""The RayJobs by component, and the job script each runs."""


def _study_job() -> dict[str, Any]:
    return _one("RayJob", "study-run")


def _containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container of every pod template anywhere in a manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _secret_ref(entry: dict[str, Any]) -> tuple[str, str, bool] | None:
    ref = entry.get("valueFrom", {}).get("secretKeyRef")
    return (ref["name"], ref["key"], bool(ref.get("optional", False))) if ref else None


def _ray_containers() -> dict[str, dict[str, Any]]:
    """The containers that run Ray or talk to it: head, workers, the RayJob's submitter."""
    cluster = _one("RayCluster")
    found = {"head": cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]}
    for group in cluster["spec"]["workerGroupSpecs"]:
        found[f"worker {group['groupName']}"] = group["template"]["spec"]["containers"][0]
    found["submitter"] = _study_job()["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    found["predict submitter"] = _one("RayJob", "predict-run")["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    return found


def _shell_commands(text: str) -> list[str]:
    """Logical command lines of a text: comment marks dropped, `\\` continuations joined."""
    lines = [re.sub(r"^\s*#\s?", "", line) for line in text.splitlines()]
    commands, current = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        commands.append((current + line).strip())
        current = ""
    return commands


def _job_invocations(text: str, script: str = "jobs/run.py") -> list[list[str]]:
    """The arguments after `python <script>` in every command of a text that runs it."""
    found = []
    for command in _shell_commands(text):
        if f"python {script}" not in command:
            continue
        words = shlex.split(command[command.index(f"python {script}"):])
        found.append(words[2:])
    return found


def _docs_code() -> str:
    return "\n".join(re.findall(r"```(?:bash|sh)?\n(.*?)```", DOCS.read_text(), re.S))


def _runtime_env_of_rayjob(component: str = "study-run") -> dict[str, Any]:
    return yaml.safe_load(_one("RayJob", component)["spec"]["runtimeEnvYAML"])


def _dockerfile() -> str:
    return (INFRA / "Dockerfile").read_text()


# --- every file parses --------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted([*INFRA.rglob("*.yaml"), *RUNTIME_ENVS]), ids=lambda p: str(p.relative_to(REPO)))
def test_every_manifest_parses(path):
    documents = _documents(path)
    assert documents
    if path.parent == K8S and path.name != "kustomization.yaml":
        for doc in documents:
            assert doc.get("apiVersion") and doc.get("kind")
            assert doc["metadata"].get("name") or doc["metadata"].get("generateName")


def test_kustomization_deploys_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    generated = [file for generator in kustomization.get("configMapGenerator", []) for file in generator["files"]]
    listed = sorted([*kustomization["resources"], *generated])
    assert listed == sorted(path.name for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
    assert "rayjob.yaml" in generated, "the RayJob must reach the CronJob as a ConfigMap, not be applied once"


# --- versions and images ------------------------------------------------------------------------


def test_images_and_ray_version_match_the_installed_ray():
    cluster = _one("RayCluster")
    assert cluster["spec"]["rayVersion"].startswith(RAY_MINOR + "."), (cluster["spec"]["rayVersion"], ray.__version__)
    crossemo_images = set()
    for doc in _k8s_objects():
        for container in _containers(doc):
            image = container["image"]
            if KUBECTL_IMAGE.match(image):
                continue
            name, _, tag = image.rpartition(":")
            assert name.endswith("/crossemo"), image
            assert tag.startswith(f"{crossemo.__version__}-ray{RAY_MINOR}."), (image, crossemo.__version__, ray.__version__)
            assert PY_TAG in tag.split("-"), (image, PY_TAG)
            crossemo_images.add(image)
    assert len(crossemo_images) == 1, f"head, workers and submitter must run one image: {crossemo_images}"

    base = re.search(r"^FROM\s+(\S+)", _dockerfile(), re.M).group(1)
    assert re.fullmatch(rf"rayproject/ray:{re.escape(RAY_MINOR)}\.\d+-{PY_TAG}-cpu", base), base
    image = crossemo_images.pop()
    assert f"-t {image} " in _dockerfile() and f"-t {image} " in DOCS.read_text(), "the documented build must tag the image the manifests run"

    launcher = yaml.safe_load((INFRA / "aws-cluster.yaml").read_text())
    assert re.fullmatch(rf"rayproject/ray:{re.escape(RAY_MINOR)}\.\d+-{PY_TAG}-cpu", launcher["docker"]["image"])


def test_dockerfile_puts_the_code_where_the_rayjob_uploads_it_from():
    dockerfile = _dockerfile()
    workdir = re.search(r"^WORKDIR\s+(\S+)", dockerfile, re.M).group(1)
    assert _runtime_env_of_rayjob()["working_dir"] == workdir
    copied = re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s+\./(\S+)$", dockerfile, re.M)
    assert ("crossemo", "crossemo") in copied and ("jobs", "jobs") in copied
    assert re.search(r"pip install [^\n]*\s\.(\s|$)", dockerfile), "the image installs crossemo and its dependencies"


# --- entrypoints and the run configuration ------------------------------------------------------


def _study_config(tmp_path: Path, args) -> pipeline.RunConfig:
    """The RunConfig the RayJob's entrypoint makes, with the ConfigMap's file in place of /config."""
    path = PurePosixPath(args.config)
    head = _ray_containers()["head"]
    mounts = {mount["mountPath"]: mount["name"] for mount in head.get("volumeMounts", [])}
    assert str(path.parent) in mounts, f"{args.config} is not on a volume of the head, where the driver runs"
    volumes = {volume["name"]: volume for volume in _one("RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]["volumes"]}
    config_map_name = volumes[mounts[str(path.parent)]]["configMap"]["name"]
    config_map = _one("ConfigMap")
    assert config_map["metadata"]["name"] == config_map_name
    local = tmp_path / path.name
    local.write_text(config_map["data"][path.name])
    args.config = str(local)
    return cli.config_from(args)


def test_rayjob_entrypoint_parses_with_the_job_parser(tmp_path):
    words = shlex.split(_study_job()["spec"]["entrypoint"])
    assert words[:2] == ["python", "jobs/run.py"]
    args = JOB.parse_args(words[2:])
    assert args.config == "/config/study.toml" and args.progress is False
    config = _study_config(tmp_path, args)
    # The study's settings are valid, and every location is object storage every node can reach.
    assert config.out.startswith("s3://")
    assert config.corpora and all(spec.uri.startswith("s3://") for spec in config.corpora)
    assert all(spec.recipe in corpora.RECIPES for spec in config.corpora)
    protocol.parse_methods(config.methods)
    assert protocol.parse_pairs(config.pairs, [spec.name for spec in config.corpora])
    assert not any(pipeline._is_secret(key) for key in config.storage_options), "credentials belong in the Secret"


def test_documented_job_commands_parse_with_the_job_parser():
    texts = {DOCS: _docs_code(), **{path: path.read_text() for path in [*RUNTIME_ENVS, INFRA / "aws-cluster.yaml", REPO / "jobs" / "run.py"]}}
    checked = 0
    for path, text in texts.items():
        for words in _job_invocations(text):
            try:
                JOB.parse_args(words)
            except JOB.BadArguments as error:
                pytest.fail(f"{path.relative_to(REPO)}: `python jobs/run.py {' '.join(words)}`: {error}")
            checked += 1
    assert checked >= 5
    for command in _shell_commands(_docs_code()):
        if "ray job submit" in command:
            runtime_env = shlex.split(command)[shlex.split(command).index("--runtime-env") + 1]
            assert (REPO / runtime_env).is_file(), command


def test_documented_predict_jobs_parse_with_the_predict_parser():
    invocations = _job_invocations(_docs_code(), "jobs/predict.py") + _job_invocations((REPO / "jobs" / "predict.py").read_text(), "jobs/predict.py")
    assert len(invocations) >= 2
    for words in invocations:
        args = JOB.parse_args(words, "predict")
        assert args.model and args.audio and args.out


def test_parser_rejects_what_crossemo_run_rejects():
    """The job's parser is the CLI's: an unknown flag is bad input, in one line."""
    with pytest.raises(JOB.BadArguments, match="unrecognized arguments: --trees"):
        JOB.parse_args(["--out", "x", "--trees", "5"])
    assert vars(JOB.parse_args(["--out", "x"])) == vars(cli.build_parser().parse_args(["run", "--out", "x"]))


# --- runtime environments -----------------------------------------------------------------------


def test_runtime_envs_are_valid_and_agree():
    envs = {path.name: yaml.safe_load(path.read_text()) for path in RUNTIME_ENVS}
    envs["RayJob"] = _runtime_env_of_rayjob()
    assert _runtime_env_of_rayjob("predict-run") == envs["RayJob"], "both RayJobs upload the same code"
    for name, env in envs.items():
        # Ray's own validation. Ray checks that a local working_dir exists: the
        # job files' "." is the repository root they are submitted from; the
        # RayJob's directory exists in the image (checked against the
        # Dockerfile), so the repository stands in for it.
        RuntimeEnv(**{**env, "working_dir": str(REPO if name == "RayJob" else REPO / env["working_dir"])})
        assert env["excludes"] == envs["runtime_env.yaml"]["excludes"], f"{name} uploads other files"
        for required in ("/.git", "/.venv", "__pycache__"):
            assert required in env["excludes"], (name, required)
    assert envs["runtime_env.yaml"]["working_dir"] == envs["runtime_env.preinstalled.yaml"]["working_dir"] == "."
    for name in ("runtime_env.preinstalled.yaml", "RayJob"):
        assert not {"pip", "uv", "conda"} & set(envs[name]), f"{name} is for an image that has the dependencies"


def test_pip_runtime_env_installs_the_package_dependencies():
    packages = yaml.safe_load(RUNTIME_ENVS[0].read_text())["pip"]["packages"]
    wanted = {(r.name.lower(), str(r.specifier)) for r in map(Requirement, PYPROJECT["project"]["dependencies"]) if r.name.lower() != "ray"}
    assert {(r.name.lower(), str(r.specifier)) for r in map(Requirement, packages)} == wanted


# --- Secrets and credentials --------------------------------------------------------------------


def test_secrets_are_referenced_consistently_and_created_as_documented():
    containers = _ray_containers()
    token_refs = set()
    for name, container in containers.items():
        env = _env(container)
        assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{name} must run with token authentication"
        token_refs.add(_secret_ref(env["RAY_AUTH_TOKEN"]))
    assert len(token_refs) == 1 and None not in token_refs, f"one token for the whole cluster: {token_refs}"
    heads_and_workers = [c for n, c in containers.items() if not n.endswith("submitter")]
    assert all(c.get("env") == heads_and_workers[0].get("env") for c in heads_and_workers), "head and workers need the same credentials"

    refs = {_secret_ref(entry) for doc in _k8s_objects() for container in _containers(doc) for entry in container.get("env", [])} - {None}
    created: dict[str, set[str]] = {}
    for command in _shell_commands(_docs_code()):
        match = re.match(r"kubectl create secret generic (\S+)", command)
        if match:
            created.setdefault(match.group(1), set()).update(re.findall(r"--from-(?:literal|file)=([A-Za-z0-9_.-]+)=", command))
    for secret, key, optional in refs:
        assert secret in created, f"Secret {secret} is used but its creation is not documented"
        assert optional or key in created[secret], f"{secret} needs key {key}; the documented command does not set it"
        assert key in DOCS.read_text(), f"{secret}/{key} is not documented"
    assert set(created) == {secret for secret, _, _ in refs}, "a documented Secret is not used"


SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.I)
CREDENTIAL_TEXT = [
    re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"),  # an AWS access key id
    re.compile(r"(?<![A-Za-z0-9])[0-9a-f]{64}(?![A-Za-z0-9])"),  # a token like Ray's
    re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),  # an AWS secret access key
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]


def test_no_credentials_are_inlined():
    for doc in [*_k8s_objects(), *_documents(K8S / "kustomization.yaml")]:
        assert doc.get("kind") != "Secret", "Secrets are created from the command line, never kept in a manifest"
        for generator in doc.get("secretGenerator", []):
            pytest.fail(f"secretGenerator {generator['name']} keeps credentials beside the manifests")
        for container in _containers(doc):
            for entry in container.get("env", []):
                if SECRET_NAME.search(entry["name"]) and not entry["name"].endswith(("_PATH", "_FILE")):
                    assert "value" not in entry and _secret_ref(entry), f"{entry['name']} must come from a Secret"
    files = [*INFRA.rglob("*"), *RUNTIME_ENVS, DOCS, REPO / "jobs" / "run.py"]
    for path in (p for p in files if p.is_file()):
        text = path.read_text()
        for pattern in CREDENTIAL_TEXT:
            match = pattern.search(text)
            assert not match, f"{path.relative_to(REPO)} holds what looks like a credential: {match.group(0)!r}"

    launcher = yaml.safe_load((INFRA / "aws-cluster.yaml").read_text())
    flat = json.dumps(launcher).lower()
    for word in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        assert word not in flat, f"the launcher config must not carry {word}; nodes use instance profiles"
    for name, node_type in launcher["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile", {})
        assert profile.get("Name") or profile.get("Arn"), f"{name} needs an IAM instance profile for object storage"


def test_launcher_config_is_valid_and_uses_the_token():
    launcher = yaml.safe_load((INFRA / "aws-cluster.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(launcher, schema)
    token_file = next(remote for remote, local in launcher["file_mounts"].items() if local == "~/.ray/auth_token")
    for key, role in (("head_start_ray_commands", "ray start --head"), ("worker_start_ray_commands", "ray start --address")):
        start = [command for command in launcher[key] if "ray start" in command]
        assert len(start) == 1 and role in start[0]
        assert "RAY_AUTH_MODE=token" in start[0] and f"RAY_AUTH_TOKEN_PATH={token_file}" in start[0], start[0]


# --- the RayJob, its cluster and its schedule ---------------------------------------------------


@pytest.mark.parametrize("component", RAYJOBS)
def test_rayjob_runs_on_the_raycluster(component):
    job, cluster = _one("RayJob", component), _one("RayCluster")
    assert "name" not in job["metadata"] and job["metadata"]["generateName"], "each created run needs its own name"
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    # A local working_dir is uploaded by `ray job submit` in the submitter pod, which has the code.
    assert job["spec"]["submissionMode"] == "K8sJobMode"
    assert shlex.split(job["spec"]["entrypoint"])[:2] == ["python", RAYJOBS[component]]


def test_predict_rayjob_entrypoint_parses_with_the_predict_parser():
    words = shlex.split(_one("RayJob", "predict-run")["spec"]["entrypoint"])
    args = JOB.parse_args(words[2:], "predict")
    assert args.progress is False and args.speaker_pattern
    re.compile(args.speaker_pattern)
    assert all(uri.startswith("s3://") for uri in [args.model, args.out, *args.audio]), "every node must reach the model, the audio and the output"


CRON_FIELDS = [(0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}), (0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())})]
CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def valid_cron(expression: str) -> bool:
    """A standard five-field cron expression (or macro), as a Kubernetes CronJob accepts."""
    if expression.strip() in CRON_MACROS:
        return True
    fields = expression.split()
    if len(fields) != 5:
        return False

    def number(text: str, low: int, high: int, names: dict[str, int]) -> bool:
        value = names.get(text.lower(), int(text) if text.isdigit() else None)
        return value is not None and low <= value <= high

    for text, (low, high, names) in zip(fields, CRON_FIELDS):
        for part in text.split(","):
            span, slash, step = part.partition("/")
            if slash and not (step.isdigit() and int(step) > 0):
                return False
            if span in ("*", "?"):
                continue
            start, dash, end = span.partition("-")
            if not number(start, low, high, names) or (dash and not number(end, low, high, names)):
                return False
    return True


@pytest.mark.parametrize("expression, valid", [
    ("0 3 * * 1", True), ("*/15 * * * *", True), ("0 0 1 jan,jul *", True), ("30 2 * * mon-fri", True), ("@weekly", True),
    ("60 3 * * 1", False), ("0 24 * * *", False), ("0 3 * *", False), ("0 3 * * 8", False), ("0 3 */0 * *", False), ("0 3 x * *", False),
])
def test_cron_validator(expression, valid):
    assert valid_cron(expression) is valid


def test_cronjob_creates_the_rayjob_on_a_valid_schedule():
    cronjob = _one("CronJob")
    spec = cronjob["spec"]
    assert valid_cron(spec["schedule"]), spec["schedule"]
    zoneinfo.ZoneInfo(spec.get("timeZone", "Etc/UTC"))
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert KUBECTL_IMAGE.match(container["image"])
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (name, mount_path), = mounts.items()
    assert container["command"] == ["kubectl"]
    assert container["args"] == ["create", "-f", f"{mount_path}/rayjob.yaml"], "kubectl create (not apply) makes a new run each time"

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    generators = {g["name"]: g for g in kustomization["configMapGenerator"]}
    generator = generators[volumes[name]["configMap"]["name"]]
    assert generator["files"] == ["rayjob.yaml", "rayjob-predict.yaml"] and generator["options"]["disableNameSuffixHash"] is True

    # The service account may create RayJobs in its namespace.
    account = pod["serviceAccountName"]
    binding = _one("RoleBinding")
    assert {"kind": "ServiceAccount", "name": account, "namespace": kustomization["namespace"]} in binding["subjects"]
    assert any(doc["kind"] == "ServiceAccount" and doc["metadata"]["name"] == account for doc in _k8s_objects())
    role = _one("Role")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert any("ray.io" in rule["apiGroups"] and "rayjobs" in rule["resources"] and "create" in rule["verbs"] for rule in role["rules"])

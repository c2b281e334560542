"""deploy/k8s agrees with Kubernetes, KEDA and the code: every overlay renders with the real
``kubectl kustomize`` and passes the Kubernetes API schemas (``kubernetes-validate``, strict);
every ScaledObject uses only the fields KEDA documents and scales a worker on the queues it
consumes; every command is an ``antihack`` command; the API's probes hit routes it serves; the
workers' probe tells a fresh heartbeat from a missing one against real Redis; pods run as
non-root on a read-only root with limits; secrets come from the Secret."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import redis
import yaml
from click.testing import CliRunner
from flask.testing import FlaskClient

from antihack.shared.cli import main
from antihack.shared.infra.heartbeat import HEARTBEAT_KEY, beat
from antihack.shared.infra.queues import ALL_QUEUES, ANALYZE_QUEUE
from antihack.shared.infra.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
STACKS = [o for o in OVERLAYS if o.startswith("stack-")]
NAMESPACE = "antihack"
SECRET = "antihack"
# kubectl's own version, and the newest schemas the validator bundles.
K8S_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not installed (CI has it: kubectl 1.32 with Kustomize 5.5)"
)
pytestmark = needs_kubectl

# The fields KEDA documents for a ScaledObject (keda.sh/docs/2.15/reference/scaledobject-spec)
# and for the `redis` (lists) trigger (keda.sh/docs/2.15/scalers/redis-lists); anything else is
# a typo that KEDA would ignore or refuse. Trigger metadata values are strings.
_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}
REDIS_LIST_METADATA = {
    "type": "object",
    "properties": {
        name: _STR
        for name in (
            "address",
            "host",
            "port",
            "usernameFromEnv",
            "passwordFromEnv",
            "listName",
            "listLength",
            "activationListLength",
            "enableTLS",
            "unsafeSsl",
            "databaseIndex",
            "addressFromEnv",
            "hostFromEnv",
            "portFromEnv",
        )
    },
    "required": ["listName", "listLength"],
    "additionalProperties": False,
    "anyOf": [
        {"required": ["address"]},
        {"required": ["addressFromEnv"]},
        {"required": ["host", "port"]},
        {"required": ["hostFromEnv", "portFromEnv"]},
    ],
}
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "apiVersion": _STR,
                        "kind": _STR,
                        "name": _STR,
                        "envSourceContainerName": _STR,
                    },
                },
                "pollingInterval": _INT,
                "cooldownPeriod": _INT,
                "initialCooldownPeriod": _INT,
                "idleReplicaCount": _INT,
                "minReplicaCount": _INT,
                "maxReplicaCount": _INT,
                "fallback": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["failureThreshold", "replicas"],
                    "properties": {"failureThreshold": _INT, "replicas": _INT},
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"name": _STR, "behavior": {"type": "object"}},
                        },
                        "scalingModifiers": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["target", "formula"],
                            "properties": {
                                "target": _STR,
                                "activationTarget": _STR,
                                "metricType": {"enum": ["AverageValue", "Value"]},
                                "formula": _STR,
                            },
                        },
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            # These manifests use only the Redis lists scaler.
                            "type": {"const": "redis"},
                            "metadata": REDIS_LIST_METADATA,
                            "name": _STR,
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["name"],
                                "properties": {
                                    "name": _STR,
                                    "kind": {
                                        "enum": [
                                            "TriggerAuthentication",
                                            "ClusterTriggerAuthentication",
                                        ]
                                    },
                                },
                            },
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                        },
                    },
                },
            },
        },
    },
}
# TriggerAuthentication's secretTargetRef, with the parameters the redis scaler documents.
TRIGGER_AUTHENTICATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretTargetRef"],
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["parameter", "name", "key"],
                        "properties": {
                            "parameter": {
                                "enum": [
                                    "address",
                                    "host",
                                    "port",
                                    "username",
                                    "password",
                                    "tls",
                                    "ca",
                                    "cert",
                                    "key",
                                    "keyPassword",
                                ]
                            },
                            "name": _STR,
                            "key": _STR,
                        },
                    },
                }
            },
        },
    },
}
KEDA_SCHEMAS = {
    "ScaledObject": SCALED_OBJECT_SCHEMA,
    "TriggerAuthentication": TRIGGER_AUTHENTICATION_SCHEMA,
}
SECRET_SETTINGS = {
    "ANTIHACK_DATABASE_URL",
    "ANTIHACK_REDIS_URL",
    "ANTIHACK_SECRET_KEY",
    "ANTIHACK_ADMIN_TOKEN",
    "ANTIHACK_METRICS_TOKEN",
}


# --- rendering --------------------------------------------------------------------------------


def kustomize(path: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(K8S / "overlays" / overlay))


def docs(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in rendered(overlay) if d["kind"] == kind]


def by_name(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs(overlay, kind)}


def pod_specs(overlay: str) -> list[tuple[str, dict[str, Any]]]:
    specs = [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in rendered(overlay)
        if d["kind"] in ("Deployment", "Job")
    ]
    assert specs, overlay
    return specs


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def option(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def main_container(overlay: str, deployment: str) -> dict[str, Any]:
    spec = by_name(overlay, "Deployment")[deployment]["spec"]["template"]["spec"]
    container: dict[str, Any] = spec["containers"][0]
    return container


def worker_pools() -> tuple[str, ...]:
    """The pools ``antihack worker --pool`` accepts (--help exits before choices are checked)."""
    command = main.commands["worker"]
    (pool,) = [p for p in command.params if p.name == "pool"]
    return tuple(pool.type.choices)  # type: ignore[attr-defined]


def k8s_validate(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


# --- the schemas ------------------------------------------------------------------------------


def test_there_are_overlays_for_every_role() -> None:
    assert {"api", "worker-gpu", "worker-cpu", "worker-io", "beat", "migrate"} <= set(OVERLAYS)
    assert STACKS


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_passes_the_kubernetes_schemas(
    overlay: str, version: str
) -> None:
    kinds = set()
    for doc in rendered(overlay):
        kinds.add(doc["kind"])
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked against KEDA's documented fields below
        k8s_validate(doc, version)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Service"} <= kinds


def test_the_schema_check_catches_a_misspelt_field() -> None:
    deployment = copy.deepcopy(by_name("api", "Deployment")["antihack-api"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    k8s_validate(deployment, K8S_VERSIONS[0])
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(deployment, K8S_VERSIONS[0])


# The "your own overlay" recipe of docs/deployment/kubernetes.md, with this checkout's paths.
USER_OVERLAY = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {k8s}/overlays/stack-gpu
components:
  - {k8s}/components/ingress
images:
  - {{name: antihack, newName: registry.example.com/antihack, newTag: 0.1.0}}
  - {{name: antihack-gpu, newName: registry.example.com/antihack-gpu, newTag: 0.1.0}}
patches:
  - target: {{kind: Service, name: antihack-postgres}}
    patch: '[{{"op": "replace", "path": "/spec/externalName", "value": "db.example.net"}}]'
  - target: {{kind: Service, name: antihack-redis}}
    patch: '[{{"op": "replace", "path": "/spec/externalName", "value": "redis.example.net"}}]'
  - target: {{kind: Ingress, name: antihack-api}}
    patch: |
      [{{"op": "replace", "path": "/spec/rules/0/host", "value": "liveness.example.com"}},
       {{"op": "replace", "path": "/spec/tls/0/hosts/0", "value": "liveness.example.com"}}]
"""


def test_the_readme_overlay_with_the_ingress_renders_and_routes_to_the_api(
    tmp_path: Path,
) -> None:
    k8s = os.path.relpath(K8S, tmp_path)  # kustomize refuses absolute paths here
    (tmp_path / "kustomization.yaml").write_text(USER_OVERLAY.format(k8s=k8s))
    out = kustomize(tmp_path)
    for doc in out:
        if not doc["apiVersion"].startswith("keda.sh/"):
            k8s_validate(doc, K8S_VERSIONS[0])
    (ingress,) = [d for d in out if d["kind"] == "Ingress"]
    assert ingress["spec"]["rules"][0]["host"] == "liveness.example.com"
    assert ingress["spec"]["tls"][0]["hosts"] == ["liveness.example.com"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    services = {d["metadata"]["name"]: d for d in out if d["kind"] == "Service"}
    ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
    assert backend["port"]["name"] in ports
    assert services["antihack-postgres"]["spec"]["externalName"] == "db.example.net"
    assert services["antihack-redis"]["spec"]["externalName"] == "redis.example.net"
    images = {
        c["image"]
        for d in out
        if d["kind"] in ("Deployment", "Job")
        for c in containers(d["spec"]["template"]["spec"])
    }
    assert images == {
        "registry.example.com/antihack:0.1.0",
        "registry.example.com/antihack-gpu:0.1.0",
    }


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o.startswith(("worker-", "stack-"))])
def test_scaled_objects_use_only_the_fields_keda_documents(overlay: str) -> None:
    found = set()
    for doc in rendered(overlay):
        if doc["apiVersion"].startswith("keda.sh/"):
            found.add(doc["kind"])
            jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
    assert found == {"ScaledObject", "TriggerAuthentication"}


def test_the_keda_schema_catches_a_misspelt_field() -> None:
    scaled = copy.deepcopy(docs("worker-gpu", "ScaledObject")[0])
    jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    metadata["listname"] = metadata.pop("listName")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)


# --- autoscaling follows the queues -----------------------------------------------------------


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o.startswith(("worker-", "stack-"))])
def test_each_worker_scales_on_exactly_the_queues_it_consumes(overlay: str) -> None:
    deployments = by_name(overlay, "Deployment")
    auths = by_name(overlay, "TriggerAuthentication")
    workers = {
        n for n, d in deployments.items() if "worker" in main_container(overlay, n)["command"]
    }
    scaled = docs(overlay, "ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == workers
    for s in scaled:
        spec = s["spec"]
        cmd = main_container(overlay, spec["scaleTargetRef"]["name"])["command"]
        consumed = set((option(cmd, "--queues") or ",".join(ALL_QUEUES)).split(","))
        lists = {t["metadata"]["listName"] for t in spec["triggers"]}
        # kombu keeps a queue's waiting messages in a Redis list named after the queue.
        assert lists == consumed, (s["metadata"]["name"], lists, consumed)
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for t in spec["triggers"]:
            # KEDA's operator dials from its own namespace: the address must be fully qualified
            # and name the namespace these manifests land in.
            host, port = t["metadata"]["address"].rsplit(":", 1)
            assert host == f"antihack-redis.{NAMESPACE}.svc.cluster.local" and port == "6379"
            assert int(t["metadata"]["listLength"]) > 0
            assert t["authenticationRef"]["name"] in auths
    for auth in auths.values():
        assert {r["name"] for r in auth["spec"]["secretTargetRef"]} == {SECRET}


@pytest.mark.parametrize("overlay", STACKS)
def test_every_queue_has_a_consumer_in_each_stack(overlay: str) -> None:
    consumed: set[str] = set()
    for name in by_name(overlay, "Deployment"):
        cmd = main_container(overlay, name)["command"]
        if cmd[:2] == ["antihack", "worker"]:
            consumed.update((option(cmd, "--queues") or ",".join(ALL_QUEUES)).split(","))
    assert consumed == set(ALL_QUEUES)
    assert by_name(overlay, "Deployment")["antihack-beat"]["spec"]["replicas"] == 1  # exactly one


# --- commands ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_command_is_an_antihack_command(overlay: str) -> None:
    runner = CliRunner()
    for name, spec in pod_specs(overlay):
        for c in containers(spec):
            cmd = c["command"]
            assert cmd[0] == "antihack", (name, cmd)
            # Click parses every option before --help acts: an unknown option fails here.
            result = runner.invoke(main, [*cmd[1:], "--help"])
            assert result.exit_code == 0, (name, cmd, result.output)
            queues = option(cmd, "--queues")
            if queues:
                assert set(queues.split(",")) <= set(ALL_QUEUES), (name, queues)
            assert option(cmd, "--pool") in (None, *worker_pools()), name
            if cmd[1] == "worker":
                # Celery's default counts the node's cores, not the pod's CPU limit.
                assert option(cmd, "--concurrency"), (name, "set --concurrency")


def test_the_wait_for_migrations_command_waits_for_the_migration(tmp_path: Path) -> None:
    """The init container's ``antihack migrate --check`` fails on a database the migrate Job has
    not brought to head yet, and passes once it has (real Alembic, on a fresh SQLite file)."""
    (cmd,) = {
        tuple(c["command"])
        for _, spec in pod_specs("stack-gpu")
        for c in spec.get("initContainers", [])
    }
    (job,) = docs("stack-gpu", "Job")
    migrate = job["spec"]["template"]["spec"]["containers"][0]["command"]
    env = {
        "ANTIHACK_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "ANTIHACK_DATA_DIR": str(tmp_path),
    }
    runner = CliRunner()
    waiting = runner.invoke(main, list(cmd[1:]), env=env)
    # One line that says why, not Alembic's traceback (the init container's log shows it).
    assert waiting.exit_code == 1, waiting.output
    assert "Target database is not up to date. (run `antihack migrate`)" in waiting.output
    assert "Traceback" not in waiting.output
    assert runner.invoke(main, migrate[1:], env=env).exit_code == 0
    result = runner.invoke(main, list(cmd[1:]), env=env)
    assert result.exit_code == 0, result.output
    # Every long-running pod waits for it.
    for name, spec in pod_specs("stack-gpu"):
        if name != "antihack-migrate":
            assert [c["name"] for c in spec["initContainers"]] == ["wait-for-migrations"], name


# --- probes -----------------------------------------------------------------------------------


def test_api_probes_point_at_paths_the_api_serves(client: FlaskClient) -> None:
    container = main_container("api", "antihack-api")
    port = option(container["command"], "--port")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {
        k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert str(ports[probe["port"]]) == port
        resp = client.get(probe["path"])
        # /readyz may be 503 here (no worker runs in this test): a JSON answer, not a 404.
        assert resp.status_code in (200, 503), (probe, resp.status_code)
        assert resp.get_json()["status"] in ("OK", "NOT_READY")
    assert client.get("/healthz").status_code == 200
    service = by_name("api", "Service")["antihack-api"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    labels = by_name("api", "Deployment")["antihack-api"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def worker_probe(overlay: str, deployment: str) -> list[str]:
    container = main_container(overlay, deployment)
    liveness = container["livenessProbe"]["exec"]["command"]
    assert container["startupProbe"]["exec"]["command"] == liveness
    assert liveness[:2] == ["python", "-c"]
    command: list[str] = liveness
    return command


@pytest.mark.parametrize(
    ("overlay", "deployment"),
    [(f"worker-{k}", f"antihack-worker-{k}") for k in ("gpu", "cpu", "io")],
)
def test_every_worker_has_the_heartbeat_probe(overlay: str, deployment: str) -> None:
    assert "container_health" in worker_probe(overlay, deployment)[2]


def test_the_worker_probe_wants_this_pods_fresh_heartbeat(base_settings: Settings) -> None:
    code = worker_probe("worker-io", "antihack-worker-io")[2]
    url = base_settings.redis_client_url
    client = redis.Redis.from_url(url)
    pod = f"antihack-worker-io-{uuid.uuid4().hex[:10]}"
    me, other = f"celery@{pod}:7", f"celery@other-{pod}:7"

    def probe() -> subprocess.CompletedProcess[str]:
        # As in the pod, whose hostname is its name (Celery's node is celery@<hostname>).
        prelude = f"import socket; socket.gethostname = lambda: {pod!r}\n"
        return subprocess.run(
            [sys.executable, "-c", prelude + code],
            env={**os.environ, "ANTIHACK_REDIS_URL": url},
            capture_output=True,
            text=True,
            timeout=30,
        )

    try:
        beat(client, other)  # another pod's worker does not make this one live
        missing = probe()
        assert missing.returncode == 1 and "no fresh heartbeat" in missing.stderr
        beat(client, me)
        assert probe().returncode == 0
        seconds, micros = client.time()
        client.zadd(HEARTBEAT_KEY, {me: seconds * 1000 + micros // 1000 - 60_000})
        assert probe().returncode == 1  # a minute old: stale, the kubelet restarts it
    finally:
        client.zrem(HEARTBEAT_KEY, me, other)


def test_the_beat_probe_wants_a_recently_saved_schedule(tmp_path: Path) -> None:
    container = main_container("beat", "antihack-beat")
    command = container["livenessProbe"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/data" in mounts  # the image's ANTIHACK_DATA_DIR, where beat saves its schedule

    def probe() -> int:
        env = {**os.environ, "ANTIHACK_DATA_DIR": str(tmp_path)}
        argv = [sys.executable, *command[1:]]  # the image's `python` is this venv's here
        return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode

    assert probe() != 0  # never saved
    schedule = tmp_path / "celerybeat-schedule"
    schedule.touch()
    assert probe() == 0
    os.utime(schedule, (0, 0))
    assert probe() != 0  # saved long ago: beat is stuck


# --- pods: security, resources, secrets -------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_non_root_on_a_read_only_root_with_limits(overlay: str) -> None:
    for name, spec in pod_specs(overlay):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"] for v in spec["volumes"]}
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, c["name"], kind)
            # The only places antihack writes: ANTIHACK_DATA_DIR (the image's /data) and /tmp.
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert set(mounts) == {"/data", "/tmp"}, (name, c["name"])
            assert set(mounts.values()) <= volumes


def test_only_the_gpu_worker_holds_a_gpu_and_it_holds_one() -> None:
    for overlay in OVERLAYS:
        for name, spec in pod_specs(overlay):
            for c in containers(spec):
                gpus = c["resources"]["limits"].get("nvidia.com/gpu")
                is_gpu_worker = name == "antihack-worker-gpu" and c["name"] == "worker"
                assert gpus == (1 if is_gpu_worker else None), (overlay, name, c["name"])
                assert c["image"].startswith("antihack-gpu:") == (name == "antihack-worker-gpu")
    gpu = main_container("worker-gpu", "antihack-worker-gpu")
    assert option(gpu["command"], "--pool") == "threads"  # one process: the models once per GPU
    assert option(gpu["command"], "--queues") == ANALYZE_QUEUE
    assert env_of(gpu)["ANTIHACK_ORT_PROVIDERS"]["value"].startswith("CUDAExecutionProvider")
    cpu = main_container("worker-cpu", "antihack-worker-cpu")
    assert env_of(cpu)["ANTIHACK_ORT_PROVIDERS"]["value"] == "CPUExecutionProvider"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_from_the_secret_and_names_are_settings(overlay: str) -> None:
    known = set(Settings().to_env())
    for name, spec in pod_specs(overlay):
        for c in containers(spec):
            env = env_of(c)
            assert "ANTIHACK_DATABASE_URL" in env, (name, c["name"])
            for var, entry in env.items():
                assert var in known, (name, var)
                if var in SECRET_SETTINGS:
                    assert "value" not in entry, (name, var)
                    assert entry["valueFrom"]["secretKeyRef"]["name"] == SECRET, (name, var)
                    assert entry["valueFrom"]["secretKeyRef"]["key"] == var
    for config in docs(overlay, "ConfigMap"):
        assert set(config["data"]) <= known and not set(config["data"]) & SECRET_SETTINGS
    assert not docs(overlay, "Secret")  # never committed: the operator creates it


def test_every_process_that_decrypts_shares_the_secret_key() -> None:
    for name in ("antihack-api", "antihack-worker-gpu", "antihack-worker-io", "antihack-beat"):
        env = env_of(main_container("stack-gpu", name))
        assert {"ANTIHACK_SECRET_KEY", "ANTIHACK_REDIS_URL"} <= set(env), name
    assert "ANTIHACK_ADMIN_TOKEN" in env_of(main_container("stack-gpu", "antihack-api"))

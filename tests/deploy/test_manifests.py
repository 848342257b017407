"""The deployment files, checked offline: the Kubernetes manifests against the API's JSON schemas
(kubernetes-validate, which ships them), the compose file against the compose specification's
schema (the copy check-jsonschema ships), and what no schema knows: probes that name real routes,
workers that consume every real queue with the command line ``serve`` runs, one beat on the lock's
scheduler, the image's user and port, environment variables the settings read."""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from django.conf import settings
from django.urls import resolve

from communication.processes import beat_argv, worker_argv
from communication.schedules import SCHEDULES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SECRET_EXAMPLE = ROOT / "deploy" / "secret.example.yaml"
COMPOSE = ROOT / "deploy" / "compose.yaml"
# The oldest Kubernetes release still maintained when these were written, and the newest schema.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
WEB_COMMAND = ["python", "-m", "communication.server"]
MIGRATE = "python manage.py migrate --noinput && python manage.py setup_schedules"


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources_() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in load_all(path)]


def of_kind(kind: str) -> list[dict]:
    return [r for r in resources_() if r["kind"] == kind]


def pod_specs() -> list[tuple[str, dict]]:
    return [
        (r["metadata"]["name"], r["spec"]["template"]["spec"])
        for r in resources_()
        if r["kind"] in ("Deployment", "Job")
    ]


def component(name: str) -> list[dict]:
    return [
        d
        for d in of_kind("Deployment")
        if d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == name
    ]


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def dockerfile() -> dict:
    text = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", text, re.M)
    assert user, "the Dockerfile's USER is numeric (runAsNonRoot verifies it)"
    return {
        "uid": int(user[1]),
        "cmd": json.loads(re.search(r"^CMD (\[.*\])$", text, re.M)[1]),
        "port": int(re.search(r"^EXPOSE (\d+)$", text, re.M)[1]),
    }


def read_by_settings(name: str) -> bool:
    """Whether a process reads environment variable ``name`` (settings or the server's argv)."""
    sources = [
        ROOT / "communication" / f
        for f in ("settings.py", "settings_database.py", "server.py", "embedded.py")
    ]
    return any(f'"{name}"' in path.read_text() for path in sources)


# ------------------------------------------------------------------------------------ Kubernetes


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_matches_the_kubernetes_schema(version):
    docs = [*resources_(), *load_all(SECRET_EXAMPLE)]
    assert len(docs) >= 10
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_rejects_a_broken_manifest():
    (beat,) = component("beat")
    broken = copy.deepcopy(beat)
    broken["spec"]["replica"] = 1  # a typo: strict validation knows no such field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    broken = copy.deepcopy(beat)
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] = "1Gi"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_probes_ask_the_health_routes():
    probed = set()
    for name, spec in pod_specs():
        for container in spec["containers"]:
            for kind, route in (
                ("startupProbe", "health-live"),
                ("livenessProbe", "health-live"),
                ("readinessProbe", "health-ready"),
            ):
                probe = container.get(kind, {}).get("httpGet")
                if probe:
                    assert resolve(probe["path"]).url_name == route, (name, kind)
                    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                    assert probe["port"] in ports, (name, kind)
                    probed.add(kind)
    assert probed == {"startupProbe", "livenessProbe", "readinessProbe"}


def test_each_worker_consumes_real_queues_with_the_command_serve_runs():
    consumed = []
    for deployment in component("worker"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        command = container["command"]
        queue = option(command, "-Q")
        assert queue == deployment["metadata"]["labels"]["communication/queue"]
        consumed += queue.split(",")
        expected = worker_argv(
            queues=queue,
            name=option(command, "-n"),
            concurrency=int(option(command, "--concurrency")),
        )
        assert command == expected[2:]  # after "python -m"
        ping = container["livenessProbe"]["exec"]["command"][-1]
        assert f"-d {option(command, '-n').replace('%h', '$HOSTNAME')}" in ping
    assert sorted(consumed) == sorted(settings.QUEUE_NAMES), "one Deployment per queue"
    assert {queue for _, _, queue in SCHEDULES.values()} <= set(consumed)


def test_one_beat_on_the_schedulers_lock():
    (beat,) = component("beat")
    assert beat["spec"]["replicas"] == 1
    (container,) = beat["spec"]["template"]["spec"]["containers"]
    # No -S: the scheduler is the settings', the one that sends only under the lock.
    assert container["command"] == beat_argv()[2:]
    assert settings.CELERY_BEAT_SCHEDULER == "communication.beat:LeaderScheduler"
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind("HorizontalPodAutoscaler")}
    assert beat["metadata"]["name"] not in scaled


def test_web_and_migration_run_the_images_commands():
    image = dockerfile()
    (web,) = component("web")
    (container,) = web["spec"]["template"]["spec"]["containers"]
    assert container["command"] == image["cmd"] == WEB_COMMAND
    assert [p["containerPort"] for p in container["ports"]] == [image["port"]]
    (job,) = of_kind("Job")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["sh", "-c", MIGRATE]
    (service,) = of_kind("Service")
    assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_every_pod_runs_as_the_images_user_with_resources():
    uid = dockerfile()["uid"]
    images = set()
    for name, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == uid, name
        for container in spec["containers"]:
            images.add(container["image"])
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, (name, bound)
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
        mounts = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        assert mounts == {v["name"] for v in spec.get("volumes", [])}, name
    assert len(images) == 1, "one image for every process"


def test_references_between_manifests_resolve():
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    for hpa in of_kind("HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    for pdb in of_kind("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        matching = [
            d for d in deployments.values() if d["spec"]["selector"]["matchLabels"] == selector
        ]
        assert len(matching) == 1, pdb["metadata"]["name"]
        assert matching[0]["spec"]["replicas"] > 1 or pdb["spec"].get("maxUnavailable")
    (config,) = of_kind("ConfigMap")
    (secret,) = load_all(SECRET_EXAMPLE)
    claims = {c["metadata"]["name"] for c in of_kind("PersistentVolumeClaim")}
    for name, spec in pod_specs():
        for container in spec["containers"]:
            refs = {
                next(iter(ref)): next(iter(ref.values()))["name"] for ref in container["envFrom"]
            }
            assert refs == {
                "configMapRef": config["metadata"]["name"],
                "secretRef": secret["metadata"]["name"],
            }, name
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
    # Every variable set is one the service reads (a typo would be silently ignored).
    names = [*config["data"], *secret["stringData"]]
    for _, spec in pod_specs():
        names += [e["name"] for c in spec["containers"] for e in c.get("env", [])]
    assert not [name for name in names if not read_by_settings(name)]
    # What production cannot start without.
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "FIELD_ENCRYPTION_KEYS"} <= set(
        secret["stringData"]
    )
    assert config["data"]["APP_ENV"] == "production"


# --------------------------------------------------------------------------------------- compose


def compose_schema() -> dict:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def compose_errors(data: dict) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_compose_file_matches_the_compose_specification():
    assert compose_errors(compose()) == []
    # A JSON copy: YAML's merge keys share one mapping between the services.
    broken = json.loads(json.dumps(compose()))
    broken["services"]["web"]["depends_on"]["migrate"]["condition"] = "when_done"
    broken["services"]["beat"]["restart_policy"] = "always"
    errors = compose_errors(broken)
    assert {tuple(e.split("]", 1)[0].strip("[").split(", ")[:2]) for e in errors} == {
        ("'services'", "'web'"),
        ("'services'", "'beat'"),
    }, errors
    assert any("when_done" in e for e in errors) and any("restart_policy" in e for e in errors)


def test_compose_runs_what_the_manifests_run():
    services = compose()["services"]
    k8s = {
        d["metadata"]["name"].removeprefix("communication-"): d["spec"]["template"]["spec"][
            "containers"
        ][0]["command"]
        for d in of_kind("Deployment")
    }
    (job,) = of_kind("Job")
    k8s["migrate"] = job["spec"]["template"]["spec"]["containers"][0]["command"]
    app = {name for name, s in services.items() if "build" in s}
    assert app == set(k8s), "the same processes in both"
    for name in app:
        assert services[name]["command"] == k8s[name], name
        assert services[name]["image"] == services["web"]["image"]
        assert services[name]["environment"]["APP_ENV"] == "production"
        if name != "migrate":
            assert services[name]["depends_on"]["migrate"] == {
                "condition": "service_completed_successfully"
            }
    probe = services["web"]["healthcheck"]["test"][-1]
    assert resolve(re.search(r"http://[^/]+(/[^']+)", probe)[1]).url_name == "health-ready"
    assert all(read_by_settings(name) for name in services["web"]["environment"])


def test_compose_brokers_keep_what_they_hold():
    services = compose()["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--appendfsync everysec" in redis_command
    assert "synchronous_commit=on" in services["postgres"]["command"]
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert services["rabbitmq"]["volumes"]

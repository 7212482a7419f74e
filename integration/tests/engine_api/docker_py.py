"""docker-py (PyPI `docker`) against shoald's Engine API: the SDK calls a user's script
makes. Prints a JSON report on stdout; any failure raises, exiting non-zero."""

import json
import os
import time

import docker

client = docker.from_env(timeout=60)
image = os.environ["SHOAL_TEST_IMAGE"]
report = {"api_version": client.api.api_version}


def wait(what, check, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


report["nodes"] = len(client.nodes.list())
managers = client.nodes.list(filters={"role": "manager"})
assert [n.attrs["Description"]["Hostname"] for n in managers] == ["node-1"], managers

net = client.networks.create("pynet", driver="overlay", attachable=True)
assert client.networks.get("pynet").attrs["Driver"] == "overlay"
assert client.networks.get(net.id).attrs["Scope"] == "swarm"

svc = client.services.create(
    image,
    command=["sh", "-c", "echo py-$GREETING; exec sleep 900909"],
    name="pysvc",
    env=["GREETING=one"],
    networks=["pynet"],
    labels={"owner": "docker-py"},
)
assert "pysvc" in [s.name for s in client.services.list()]
assert [s.name for s in client.services.list(filters={"label": "owner=docker-py"})] == ["pysvc"]


def running():
    return [t for t in svc.tasks() if t["Status"]["State"] == "running" and t["DesiredState"] == "running"]


wait("pysvc running", lambda: len(running()) == 1)


def logs_text():
    out = svc.logs(stdout=True, stderr=True)
    if not isinstance(out, (bytes, bytearray)):
        out = b"".join(out)
    return out.decode()


wait("pysvc's output", lambda: "py-one" in logs_text())
report["logs_ok"] = True

svc.update(env=["GREETING=two"])
svc.reload()
assert svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["GREETING=two"], svc.attrs
wait("pysvc rolled to two", lambda: "py-two" in logs_text())

# A stale version is Docker's 409.
try:
    client.api.update_service(svc.id, version=1, task_template=svc.attrs["Spec"]["TaskTemplate"], name="pysvc")
    raise AssertionError("a stale update was accepted")
except docker.errors.APIError as e:
    assert e.status_code == 409, e
    report["stale_update"] = str(e.explanation)

try:
    client.services.get("no-such-service")
    raise AssertionError("a missing service was found")
except docker.errors.NotFound:
    pass

svc.remove()


def net_gone():
    try:
        net.remove()
        return True
    except docker.errors.APIError:
        return False


wait("pynet removable once pysvc's tasks are gone", net_gone)
print(json.dumps(report))

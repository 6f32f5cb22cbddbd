"""Interop: the official Arvados Python SDK (arvados-python-client 3.2.x)
against keepstore-sim.

The SDK is a real Keep client nobody here wrote, so it judges whether the
simulator looks like a keepstore: signed PUT answers, signature enforcement,
rendezvous placement and probe order, 100-continue on large PUTs.

Run: bash scripts/install-test-deps.sh && .venv/bin/pytest tests/interop
The binary comes from $KEEPSTORE_SIM (default target/debug/keepstore-sim).
"""

import hashlib
import json
import os
import random
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import arvados.errors
import arvados.keep

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SIM = os.environ.get("KEEPSTORE_SIM", os.path.join(ROOT, "target", "debug", "keepstore-sim"))
ROOT_TOKEN = "systemroottoken0123456789abcdefghijklmnopqrstuvwxy"
USER_TOKEN = "usertoken0123456789abcdefghijklmnopqrstuvwxyz01234"
SIGNING_KEY = "signingkey-" + "k" * 40
SERVICES = 5

# docs/protocol.md, "Rendezvous order": the reference probe orders shared by the Go and Python SDKs.
REFERENCE = [
    ("10eab6008d5642cf42abd2aa41f847cb", "3eab2d5fc9681074"),
    ("9a25b027482b37e047104e2e532cabae", "097dba52e648f1c3"),
    ("ece15765f11abfb7d3c71995a3d63bfe", "c5b4e023f8a7d691"),
    ("0c1728e2354416472350c906ca8b5718", "9d81c02e76a3bf54"),
]


class MockApi:
    """Just enough of an API client for KeepClient (docs/protocol.md, "Python SDK as a reference client")."""

    def __init__(self, services, token):
        self.api_token = token
        self.insecure = True
        self.request_id = None
        self._services = services

    def keep_services(self):
        return self

    def accessible(self):
        return self

    def execute(self, **_kw):
        return self._services

    def config(self):
        return {}


def keep_client(services, token=USER_TOKEN):
    return arvados.keep.KeepClient(api_client=MockApi(services, token), proxy="", local_store="", num_retries=2)


def wait_for(path, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise RuntimeError("keepstore-sim exited with %s" % proc.returncode)
        time.sleep(0.05)
    raise TimeoutError("keepstore-sim did not write %s" % path)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    if "KEEPSTORE_SIM" not in os.environ:
        # Make sure the default binary exists and is current (quick when it is).
        subprocess.run(["cargo", "build", "--quiet", "--bin", "keepstore-sim"], cwd=ROOT, check=True)
    if not os.access(SIM, os.X_OK):
        pytest.fail("keepstore-sim binary not found at %s (cargo build, or set KEEPSTORE_SIM)" % SIM)
    tmp = tmp_path_factory.mktemp("sim")
    services_json = str(tmp / "services.json")
    proc = subprocess.Popen(
        [SIM, "--services", str(SERVICES), "--root-token", ROOT_TOKEN, "--signing-key", SIGNING_KEY,
         "--enforce-signatures", "--services-json", services_json],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(services_json, proc)
        with open(services_json) as f:
            services = json.load(f)
        yield {"proc": proc, "services": services, "services_json": services_json, "tmp": tmp}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, proc.stderr.read().decode(errors="replace")
    stderr = proc.stderr.read().decode(errors="replace")
    assert ROOT_TOKEN not in stderr and SIGNING_KEY not in stderr


def roots_by_uuid(services):
    out = {}
    for s in services["items"]:
        out["http://%s:%d/" % (s["service_host"], s["service_port"])] = s["uuid"]
    return out


def request(method, url, token, data=None):
    req = urllib.request.Request(url, method=method, data=data)
    req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def sim_probe_order(services_json, hashes):
    out = subprocess.run([SIM, "probe-order", "--services-json", services_json] + list(hashes),
                         check=True, capture_output=True, text=True).stdout
    return [line.split() for line in out.splitlines()]


@pytest.mark.parametrize("size", [0, 1, 3 << 20, 10 << 20])
def test_put_places_on_first_two_of_probe_order_and_get_roundtrips(sim, size):
    kc = keep_client(sim["services"])
    data = os.urandom(size)
    h = hashlib.md5(data).hexdigest()
    signed = kc.put(data, copies=2)
    assert signed.startswith("%s+%d+A" % (h, size)), "PUT answer must be a signed locator"
    # Placement: the first two services of the SDK's own probe order hold it.
    roots = kc.weighted_service_roots(arvados.keep.KeepLocator(signed), need_writable=True)
    assert len(roots) == SERVICES
    for root in roots[:2]:
        status, _ = request("HEAD", root + signed, USER_TOKEN)
        assert status == 200, "service %s does not hold %s" % (root, h)
    # Our rendezvous order agrees with the SDK's.
    uuids = roots_by_uuid(sim["services"])
    assert [uuids[r] for r in roots] == sim_probe_order(sim["services_json"], [h])[0]
    # GET with the signed locator gives the data back intact.
    fresh = keep_client(sim["services"])
    assert fresh.get(signed) == data


def test_signatures_enforced(sim):
    kc = keep_client(sim["services"])
    data = b"signature enforcement check"
    signed = kc.put(data, copies=1)
    unsigned = signed.split("+A")[0]
    root = kc.weighted_service_roots(arvados.keep.KeepLocator(signed), need_writable=True)[0]
    assert request("GET", root + unsigned, USER_TOKEN)[0] == 403
    assert request("GET", root + signed, "someoneelse")[0] == 403
    assert request("GET", root + signed, USER_TOKEN) == (200, data)
    with pytest.raises((arvados.errors.NotFoundError, arvados.errors.KeepReadError)):
        keep_client(sim["services"]).get(unsigned)


def test_index_lists_puts_and_ends_with_blank_line(sim):
    kc = keep_client(sim["services"])
    data = os.urandom(1000)
    signed = kc.put(data, copies=2)
    h = signed.split("+")[0]
    holders = kc.weighted_service_roots(arvados.keep.KeepLocator(signed), need_writable=True)[:2]
    for root in holders:
        status, body = request("GET", root + "index/" + h[:2], ROOT_TOKEN)
        assert status == 200
        text = body.decode()
        assert text.endswith("\n\n") or text == "\n"
        assert any(line.startswith("%s+1000 " % h) for line in text.splitlines())
        assert request("GET", root + "index", USER_TOKEN)[0] == 403


def test_counters_subcommand(sim):
    out = subprocess.run([SIM, "counters", "--services-json", sim["services_json"], "--root-token", ROOT_TOKEN],
                         check=True, capture_output=True, text=True).stdout
    counters = json.loads(out)
    assert len(counters) == SERVICES
    assert sum(c["counters"]["puts"] for c in counters) >= 2


def test_probe_order_matches_sdk_reference_and_random_hashes(tmp_path):
    services = {"kind": "arvados#keepServiceList", "items": [
        {"uuid": "zzzzz-bi6l4-%015x" % j, "service_host": "127.0.0.1", "service_port": 20000 + j,
         "service_ssl_flag": False, "service_type": "disk", "read_only": False} for j in range(16)]}
    path = str(tmp_path / "ref.json")
    with open(path, "w") as f:
        json.dump(services, f)
    kc = keep_client(services)
    uuids = roots_by_uuid(services)
    rng = random.Random(20240101)
    hashes = [h for h, _ in REFERENCE] + ["%032x" % rng.getrandbits(128) for _ in range(1000)]
    ours = sim_probe_order(path, hashes)
    for h, got in zip(hashes, ours):
        sdk = [uuids[r] for r in kc.weighted_service_roots(arvados.keep.KeepLocator(h), need_writable=True)]
        assert got == sdk, h
    for (h, order), got in zip(REFERENCE, ours):
        assert "".join("%x" % int(u[-15:], 16) for u in got) == order

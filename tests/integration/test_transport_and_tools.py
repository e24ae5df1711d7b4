"""CORS and TLS on Corral's listener, and `corral top` against a running fleet."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from procs import Fleet, start_corral, start_sim


def test_cors_follows_ollamas_default_policy(fleet: Fleet) -> None:
    preflight = httpx.options(
        fleet.url + "/api/chat",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "x-stainless-retry-count" in allowed
    assert preflight.headers["access-control-max-age"] == "43200"
    evil = httpx.options(
        fleet.url + "/api/chat", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert evil.status_code == 403 and evil.content == b""
    plain = httpx.get(fleet.url + "/api/tags")
    assert "access-control-allow-origin" not in plain.headers
    browser = httpx.get(fleet.url + "/api/tags", headers={"Origin": "http://127.0.0.1:5173"})
    assert browser.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"
    assert browser.headers["vary"] == "Origin"


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_tls_on_corrals_own_listener(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    sim = start_sim("m:1b", extra=["--tokens-per-second", "2000", "--load-seconds", "0"])
    port_config = {
        "backends": [{"name": "n", "url": sim.url}],
        "server": {"tls": {"cert_file": str(cert), "key_file": str(key)}},
    }
    try:
        corral = start_corral(port_config, ready_scheme="https")
    except Exception:
        sim.stop()
        raise
    try:
        url = f"https://127.0.0.1:{corral.port}"
        reply = httpx.post(
            url + "/api/generate",
            verify=ssl.create_default_context(cafile=str(cert)),
            timeout=30,
            json={"model": "m:1b", "prompt": "x", "stream": False},
        )
        assert reply.status_code == 200 and reply.json()["done"] is True
    finally:
        corral.stop()
        sim.stop()


WIDE = {**os.environ, "COLUMNS": "200"}


def test_corral_top_shows_the_fleet(fleet: Fleet) -> None:
    httpx.post(fleet.url + "/api/generate", json={"model": "llama3.2:1b", "prompt": "x", "stream": False})
    result = subprocess.run(
        [sys.executable, "-m", "corral", "top", "--url", fleet.url, "--iterations", "2", "--interval", "0.2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in ("node-a", "node-b", "req/s", "TTFT"):
        assert name in result.stdout
    status = subprocess.run(
        [sys.executable, "-m", "corral", "status", "--url", fleet.url], capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0 and "node-faulty" in status.stdout and "ready" in status.stdout
    down = subprocess.run(
        [sys.executable, "-m", "corral", "status", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1 and "cannot read" in down.stdout + down.stderr

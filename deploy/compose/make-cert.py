"""Write a self-signed TLS certificate for the front proxy, unless one is already there.

Run by the Compose stacks' one-shot `tls-cert` service (in the Corral image, which already has the
`cryptography` package) so that HAProxy's TLS listener starts on a laptop with no setup. For real use,
put your own certificate and key, concatenated, at corral.pem in the `tls` volume (or bind-mount a
folder there instead); this script never overwrites an existing file.

    python make-cert.py DIR [HOSTNAME...]

writes DIR/corral.pem (certificate then key, as HAProxy reads it), DIR/corral.crt and DIR/corral.key
(as nginx reads them).
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make(folder: Path, names: list[str]) -> bool:
    """Write the files; False (and nothing written) when corral.pem already exists."""
    pem = folder / "corral.pem"
    if pem.exists():
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corral.crt").write_bytes(cert_pem)
    # Readable by the proxy's own user, whatever its UID: the volume is mounted into the proxy only.
    (folder / "corral.key").write_bytes(key_pem)
    pem.write_bytes(cert_pem + key_pem)
    for path in (folder / "corral.key", pem):
        path.chmod(0o644)
    return True


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    folder, names = Path(argv[0]), argv[1:] or ["localhost"]
    written = make(folder, names)
    print(f"{'wrote a self-signed certificate' if written else 'kept the existing certificate'} in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The PKI a control plane needs: a cluster CA, serving and client certificates, the
service-account signing key and a front-proxy CA (without which the controller-manager
and the aggregation layer complain)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID_FOR = datetime.timedelta(days=2)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_path: Path
    key_path: Path

    @classmethod
    def create(cls, directory: Path, name: str) -> Authority:
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(
            key,
            cert,
            _write_cert(directory / f"{name}.crt", cert),
            _write_key(directory / f"{name}.key", key),
        )

    def issue(
        self,
        directory: Path,
        name: str,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        server_names: tuple[str, ...] = (),
        server_ips: tuple[str, ...] = (),
    ) -> tuple[Path, Path]:
        """A leaf certificate: a server one when names or IPs are given, else a client one."""
        key = _key()
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        now = datetime.datetime.now(datetime.UTC)
        is_server = bool(server_names or server_ips)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALID_FOR)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        ExtendedKeyUsageOID.SERVER_AUTH
                        if is_server
                        else ExtendedKeyUsageOID.CLIENT_AUTH
                    ]
                ),
                critical=False,
            )
        )
        if is_server:
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return (
            _write_cert(directory / f"{name}.crt", cert),
            _write_key(directory / f"{name}.key", key),
        )


@dataclass(frozen=True)
class Pki:
    ca: Authority
    front_proxy_ca: Authority
    apiserver: tuple[Path, Path]
    front_proxy_client: tuple[Path, Path]
    admin: tuple[Path, Path]
    service_account_key: Path
    service_account_pub: Path

    @classmethod
    def create(cls, directory: Path, apiserver_ips: tuple[str, ...] = ()) -> Pki:
        """`apiserver_ips`: more addresses the apiserver is reached at (the real node's
        end of its link to the host)."""
        directory.mkdir(parents=True, exist_ok=True)
        ca = Authority.create(directory, "ca")
        front_proxy_ca = Authority.create(directory, "front-proxy-ca")
        sa_key = _key()
        sa_pub = directory / "service-account.pub"
        sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return cls(
            ca=ca,
            front_proxy_ca=front_proxy_ca,
            apiserver=ca.issue(
                directory,
                "apiserver",
                "kube-apiserver",
                server_names=(
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ),
                server_ips=("127.0.0.1", "10.0.0.1", *apiserver_ips),
            ),
            front_proxy_client=front_proxy_ca.issue(
                directory, "front-proxy-client", "front-proxy-client"
            ),
            admin=ca.issue(
                directory, "admin", "testground-admin", organizations=("system:masters",)
            ),
            service_account_key=_write_key(directory / "service-account.key", sa_key),
            service_account_pub=sa_pub,
        )

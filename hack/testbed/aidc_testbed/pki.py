"""The test bed's certificate authority, certificates and service-account signing key.

The API server authenticates every component by a client certificate (the name is the user, the
organisation the group, as in kubeadm), serves TLS with a certificate for the loopback address
and the in-cluster names, and signs ServiceAccount tokens with its own key. ECDSA P-256 keys keep
a fresh start fast; they are what Kubernetes accepts for TLS and for ES256 tokens alike.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)

# The API server's own names, as a pod would reach it (the Service `kubernetes` takes the first
# address of --service-cluster-ip-range).
API_SERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# The first real node's bridge address (aidc_testbed.realnodes): with real nodes, the API server
# advertises it to pods behind the `kubernetes` Service.
API_ADVERTISE_ADDRESS = "10.245.0.1"
API_SERVER_IPS = ("127.0.0.1", "10.96.0.1", API_ADVERTISE_ADDRESS)


@dataclass(frozen=True)
class ClientIdentity:
    """Who a client certificate says its holder is: user ``name`` in the ``groups``."""

    file_stem: str
    name: str
    groups: tuple[str, ...] = ()


# kube-controller-manager and kube-scheduler get the identities the bootstrap RBAC policy grants
# their rights to; kwok acts for every kubelet at once, so it is an administrator like kwokctl's.
ADMIN = ClientIdentity("admin", "aidc-testbed-admin", ("system:masters",))
CONTROLLER_MANAGER = ClientIdentity("kube-controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("kube-scheduler", "system:kube-scheduler")
KWOK = ClientIdentity("kwok", "kwok-controller", ("system:masters",))
# The API server's identity towards the kubelets of real nodes (logs, exec, port-forward), as kubeadm's
# apiserver-kubelet-client; and kube-proxy's, which the bootstrap policy binds to system:node-proxier.
KUBELET_CLIENT = ClientIdentity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
KUBE_PROXY = ClientIdentity("kube-proxy", "system:kube-proxy")
CLIENTS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK, KUBELET_CLIENT, KUBE_PROXY)


def node_identity(node: str) -> ClientIdentity:
    """A real node's kubelet: the Node authorizer and NodeRestriction know it by this name and group."""
    return ClientIdentity(f"node-{node}", f"system:node:{node}", ("system:nodes",))


@dataclass(frozen=True)
class Pki:
    """The paths of every PEM file :func:`create_pki` writes under ``root``."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def serving_cert(self) -> Path:
        """TLS certificate of the API server (and of the controller manager and the scheduler)."""
        return self.root / "serving.crt"

    @property
    def serving_key(self) -> Path:
        return self.root / "serving.key"

    @property
    def service_account_key(self) -> Path:
        """Private key that signs ServiceAccount tokens."""
        return self.root / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.root / "sa.pub"

    def client_cert(self, identity: ClientIdentity) -> Path:
        return self.root / f"{identity.file_stem}.crt"

    def client_key(self, identity: ClientIdentity) -> Path:
        return self.root / f"{identity.file_stem}.key"

    def kubelet_serving_cert(self, node: str) -> Path:
        return self.root / f"kubelet-{node}-serving.crt"

    def kubelet_serving_key(self, node: str) -> Path:
        return self.root / f"kubelet-{node}-serving.key"

    def serving_cert_of(self, component: str) -> Path:
        """TLS certificate of a component the API server calls back (a webhook server)."""
        return self.root / f"{component}-serving.crt"

    def serving_key_of(self, component: str) -> Path:
        return self.root / f"{component}-serving.key"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _issue_client(pki: Pki, identity: ClientIdentity, ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name) -> None:
    key = _new_key()
    cert = (
        _builder(_name(identity.name, identity.groups), ca_name, key.public_key())
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.client_key(identity), key)
    _write_cert(pki.client_cert(identity), cert)


def _load_ca(pki: Pki) -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki.ca_key} is not an EC key")
    return key, x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()).subject


def issue_client_credentials(pki: Pki, identity: ClientIdentity) -> ClientIdentity:
    """A client certificate for ``identity``, signed by the test bed's CA, for a component started
    after the bed (a second scheduler): what it may do is whatever RBAC binds to its name."""
    ca_key, ca_name = _load_ca(pki)
    _issue_client(pki, identity, ca_key, ca_name)
    return identity


def issue_node_credentials(pki: Pki, node: str, address: str) -> ClientIdentity:
    """A real node's kubelet client certificate and its serving certificate (for ``address`` and the
    node's name), signed by the test bed's CA, so the API server verifies the kubelet and back."""
    ca_key, ca_name = _load_ca(pki)
    identity = node_identity(node)
    _issue_client(pki, identity, ca_key, ca_name)
    key = _new_key()
    alt_names: list[x509.GeneralName] = [x509.DNSName(node), x509.IPAddress(ipaddress.ip_address(address))]
    cert = (
        _builder(_name(f"system:node:{node}", ("system:nodes",)), ca_name, key.public_key())
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.kubelet_serving_key(node), key)
    _write_cert(pki.kubelet_serving_cert(node), cert)
    return identity


def issue_serving_credentials(pki: Pki, component: str, addresses: tuple[str, ...]) -> tuple[Path, Path]:
    """A serving certificate for ``component`` at ``addresses`` (IPs), signed by the test bed's CA, so
    the API server, which trusts that CA as a webhook's caBundle, verifies it; (cert, key) paths."""
    ca_key, ca_name = _load_ca(pki)
    key = _new_key()
    alt_names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        _builder(_name(component), ca_name, key.public_key())
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.serving_key_of(component), key)
    _write_cert(pki.serving_cert_of(component), cert)
    return pki.serving_cert_of(component), pki.serving_key_of(component)


def create_pki(root: Path) -> Pki:
    """Write a fresh CA, the serving and client certificates and the token signing key."""
    root.mkdir(parents=True, exist_ok=True)
    pki = Pki(root)

    ca_key = _new_key()
    ca_name = _name("aidc-testbed-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
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
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, ca_cert)

    serving_key = _new_key()
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in API_SERVER_DNS_NAMES]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in API_SERVER_IPS]
    serving_cert = (
        _builder(_name("kube-apiserver"), ca_name, serving_key.public_key())
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.serving_key, serving_key)
    _write_cert(pki.serving_cert, serving_cert)

    for identity in CLIENTS:
        _issue_client(pki, identity, ca_key, ca_name)

    sa_key = _new_key()
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki

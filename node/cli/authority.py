"""``fednode ca`` and ``fednode directory``: the federation authority's commands."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from node.admin.client import invoke, is_running
from node.config import load_config
from node.errors import CertificateError, ConfigError, StaleDirectoryError
from node.identity import certs
from node.identity.authority import Authority
from node.identity.directory import install_directory_file, parse_directory
from node.identity.keys import write_private_file
from node.output_path import check_output

__all__ = ["register"]

_CA_HELP = """\
The federation authority runs these on an offline machine. The CA key never
leaves that machine; only certificates and the signed directory do.

examples:
  fednode ca init --ca ./authority --federation city
  fednode ca issue --ca ./authority --request traffic/request.json --out traffic-node.pem
  fednode ca issue --ca ./authority --request traffic/request.json --out traffic-2027.pem --replace
  fednode ca revoke --ca ./authority traffic --reason key-compromise
  fednode ca list --ca ./authority
"""

_DIRECTORY_HELP = """\
The federation directory lists every department with its endpoint, pinned
certificate, public keys and witness role. The authority signs it; each node
installs it and refuses older serials and bad signatures.

examples:
  fednode directory publish --ca ./authority --out directory.json --days 30
  fednode directory install directory.json --ca-cert ca.pem --home ./traffic
  fednode directory show directory.json --ca-cert ca.pem
"""


def positive_days(text: str) -> int:
    """An argparse type: a validity of at least one day (a shorter one is refused up front,
    before anything is signed or a serial is used up)."""
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
    if days < 1:
        raise argparse.ArgumentTypeError(f"validity must be at least 1 day, got {days}")
    return days


def _add(sub: Any, name: str, help_: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=description)
    return parser


def _ca_folder(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ca", type=Path, required=True, help="the authority's folder (ca.key, ca.pem, state.json)"
    )


def register(subparsers: Any) -> None:
    ca = _add(subparsers, "ca", "federation authority: CA, certificates, revocation", _CA_HELP)
    ca_sub = ca.add_subparsers(metavar="COMMAND")

    init = _add(ca_sub, "init", "create the federation CA", "Create the CA key and certificate.")
    _ca_folder(init)
    init.add_argument("--federation", required=True, help="federation id, e.g. 'city'")
    init.add_argument("--days", type=positive_days, default=3650, help="CA validity (default 3650)")
    init.set_defaults(handler=_ca_init)

    issue = _add(
        ca_sub,
        "issue",
        "issue a node certificate from an enrolment request",
        "Verify a department's request.json (written by 'fednode init'), issue its TLS\n"
        "certificate with URI SAN fednode://<federation>/<department>, and record its\n"
        "public keys for the next directory.\n\n"
        "A department that already holds a certificate needs --replace: peers pin the\n"
        "certificate in the directory, so the department must install the new one when\n"
        "the next directory is published, or peers refuse it. A request with the\n"
        "enrolled keys is a rotation or an endpoint change ('fednode request'); one\n"
        "with different keys is a re-enrolment: check with the department first.",
    )
    _ca_folder(issue)
    issue.add_argument("--request", type=Path, required=True, help="the department's request.json")
    issue.add_argument(
        "--out", type=Path, required=True, help="where to write the certificate (a new file)"
    )
    issue.add_argument(
        "--days", type=positive_days, default=365, help="validity in days (default 365)"
    )
    issue.add_argument(
        "--not-before",
        type=dt.datetime.fromisoformat,
        default=None,
        help="ISO start of validity (default: now); for planned rotations",
    )
    issue.add_argument(
        "--no-witness", action="store_true", help="do not make this department a ledger witness"
    )
    issue.add_argument(
        "--replace",
        action="store_true",
        help="replace the certificate the department already holds (rotation, new endpoint)",
    )
    issue.set_defaults(handler=_ca_issue)

    revoke = _add(
        ca_sub,
        "revoke",
        "revoke a department's certificate",
        "Revoke the department's current certificate. It is refused as soon as nodes\n"
        "install the next directory ('fednode directory publish').",
    )
    _ca_folder(revoke)
    revoke.add_argument("department")
    revoke.add_argument("--reason", default="unspecified", help="recorded in the directory")
    revoke.set_defaults(handler=_ca_revoke)

    listing = _add(ca_sub, "list", "list enrolled departments and revocations", "List enrolments.")
    _ca_folder(listing)
    listing.set_defaults(handler=_ca_list)

    directory = _add(
        subparsers,
        "directory",
        "federation authority: publish and install the directory",
        _DIRECTORY_HELP,
    )
    dir_sub = directory.add_subparsers(metavar="COMMAND")
    publish = _add(
        dir_sub, "publish", "sign a new directory", "Sign a directory with the next serial number."
    )
    _ca_folder(publish)
    publish.add_argument("--out", type=Path, required=True, help="where to write directory.json")
    publish.add_argument(
        "--days", type=positive_days, default=30, help="validity in days (default 30)"
    )
    publish.add_argument(
        "--witness-threshold",
        type=int,
        default=None,
        help="cosignatures a checkpoint needs to count as published (k of n)",
    )
    publish.set_defaults(handler=_directory_publish)

    install = _add(
        dir_sub,
        "install",
        "install a directory into this node",
        "Verify a directory against the federation CA and install it. A running node\n"
        "switches to it at once; older serials and bad signatures are refused.\n\n"
        "With --if-newer, a valid directory that is not newer than the installed one\n"
        "is skipped with exit 0, while a bad signature, another federation or an\n"
        "expired directory still fail (exit 4): what a start-up script wants.\n\n"
        "example:\n"
        "  fednode directory install directory.json --home /var/lib/fednode --if-newer",
    )
    install.add_argument("file", type=Path)
    install.add_argument(
        "--ca-cert",
        type=Path,
        default=None,
        help="federation CA certificate (default: HOME/ca.pem)",
    )
    install.add_argument(
        "--if-newer",
        action="store_true",
        help="skip (exit 0) a valid directory that is not newer than the installed one",
    )
    install.set_defaults(handler=_directory_install)

    show = _add(dir_sub, "show", "verify and print a directory", "Verify and print a directory.")
    show.add_argument("file", type=Path)
    show.add_argument("--ca-cert", type=Path, required=True, help="federation CA certificate")
    show.set_defaults(handler=_directory_show)


def _ca_init(args: argparse.Namespace) -> int:
    authority = Authority.create(args.ca, args.federation, validity_days=args.days)
    print(f"created federation CA for '{args.federation}' in {args.ca}")
    print(f"  certificate: {authority.cert_path} (give this to every department)")
    print(f"  key:         {authority.key_path} (keep offline)")
    return 0


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e


def _ca_issue(args: argparse.Namespace) -> int:
    # Before anything is signed or recorded: a refused --out must not leave the
    # department enrolled with a certificate nobody holds.
    check_output(args.out)
    authority = Authority(args.ca)
    issued = authority.issue(
        _read(args.request, "enrolment request"),
        witness=not args.no_witness,
        validity_days=args.days,
        not_before=args.not_before,
        replace=args.replace,
    )
    write_private_file(args.out, issued.pem)
    args.out.chmod(0o644)
    print(f"issued certificate for '{issued.department}' -> {args.out}")
    print(f"  serial {issued.serial}, valid until {issued.not_after:%Y-%m-%d}")
    print(f"  fingerprint {issued.fingerprint}")
    if issued.replaced_serial is not None:
        kind = "same keys" if issued.same_keys else "new keys: a re-enrolment"
        print(f"  replaces serial {issued.replaced_serial} ({kind})")
        print(
            f"  '{issued.department}' must install {args.out.name} as tls/node.pem when the "
            "next directory is published, or peers refuse it"
        )
    print("next: 'fednode directory publish' so peers learn the new certificate")
    return 0


def _ca_revoke(args: argparse.Namespace) -> int:
    revocation = Authority(args.ca).revoke(args.department, reason=args.reason)
    print(f"revoked certificate {revocation['serial']} of '{args.department}'")
    print("next: 'fednode directory publish' and install the new directory on every node")
    return 0


def _ca_list(args: argparse.Namespace) -> int:
    state = Authority(args.ca).enrolments()
    print(f"federation {state['federation']}, last directory serial {state['directory_serial']}")
    for dept, entry in sorted(state["departments"].items()):
        role = "witness" if entry["witness"] else "-"
        print(f"  {dept:<20} {entry['endpoint']:<24} {role:<8} {entry['tls_fingerprint'][:23]}…")
    for rev in state["revoked"]:
        print(f"  revoked {rev['department']} serial {rev['serial']} ({rev['reason']})")
    return 0


def _directory_publish(args: argparse.Namespace) -> int:
    authority = Authority(args.ca)
    data = authority.publish_directory(
        validity_days=args.days, witness_threshold=args.witness_threshold
    )
    write_private_file(args.out, data)
    args.out.chmod(0o644)
    directory = parse_directory(data, authority.ca_certificate())
    print(
        f"published directory serial {directory.serial} with {len(directory.entries)} "
        f"departments, {len(directory.revoked)} revocations -> {args.out}"
    )
    chosen = authority.chosen_witness_threshold
    if directory.witness_threshold < chosen:
        print(
            f"warning: witness threshold {directory.witness_threshold} in this directory, "
            f"below the chosen {chosen}: only {len(directory.witnesses)} witnesses are "
            f"enrolled and a log cannot witness itself; the next directory with "
            f"{chosen + 1} witnesses carries {chosen} again",
            file=sys.stderr,
        )
    return 0


def _directory_install(args: argparse.Namespace) -> int:
    data = _read(args.file, "directory")
    home: Path = args.home
    # First: a mistyped --home must not be created, nor get a ca.pem.
    config = load_config(home)
    trusted = home / "ca.pem"
    if args.ca_cert is None:
        ca_cert = certs.load_ca_cert(
            trusted,
            hint="pass --ca-cert ca.pem, the federation authority's certificate "
            "(made by 'fednode ca init'; the authority hands a copy to each department)",
        )
    else:
        ca_cert = certs.load_ca_cert(args.ca_cert)
        # The node verifies every directory against the CA it already trusts. A
        # directory signed by another CA, installed past it, would leave a node
        # that cannot start and refuses the real directory as older.
        if trusted.exists() and certs.load_ca_cert(trusted) != ca_cert:
            raise CertificateError(
                f"{args.ca_cert} is not the federation CA this node trusts ({trusted})",
                hint="check the directory came from your federation's authority; a node "
                "moves to another federation only by enrolling afresh in a new home",
            )
    try:
        if is_running(home):
            result = invoke(
                home, "directory.install", {"directory_b64": base64.b64encode(data).decode()}
            )
            print(f"running node switched to directory serial {result['serial']}")
            return 0
        directory = install_directory_file(
            config.directory_path, config.directory_state_path, data, ca_cert
        )
    except StaleDirectoryError as e:
        if not args.if_newer:
            raise
        print(f"nothing installed: {e}")
        return 0
    if not trusted.exists():
        write_private_file(trusted, ca_cert.public_bytes(serialization.Encoding.PEM))
    print(f"installed directory serial {directory.serial} into {home}")
    return 0


def _directory_show(args: argparse.Namespace) -> int:
    directory = parse_directory(_read(args.file, "directory"), certs.load_ca_cert(args.ca_cert))
    expires = dt.datetime.fromtimestamp(directory.expires_at, dt.UTC)
    out = sys.stdout
    out.write(f"federation {directory.federation}, serial {directory.serial}, ")
    out.write(
        f"expires {expires:%Y-%m-%d %H:%M} UTC, witness threshold {directory.witness_threshold}\n"
    )
    for entry in directory.entries.values():
        role = "witness" if entry.witness else "-"
        out.write(f"  {entry.department:<20} {entry.endpoint:<24} {role:<8} {entry.display_name}\n")
    for rev in directory.revoked:
        out.write(f"  revoked: {rev.department} serial {rev.serial} ({rev.reason})\n")
    return 0

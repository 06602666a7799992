"""``fednode ledger``: checkpoint, export, verify, prove, show, fsck and erase the audit ledger.

``verify`` runs offline and needs no node; ``fsck`` opens the ledger file in
``--home`` directly; the other commands ask the running node over its admin
socket.

``verify`` trusts only the federation CA the auditor names with ``--ca``: a
bundle's own ``ca.pem`` is whatever its writer put there, so using it is an
explicit, loudly reported choice (``--trust-bundle-ca``). Damage found by
``fsck`` and forks reported by witnesses exit 7 (integrity), never 0, 3 or 5.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from ledger.checkpoint import verify_checkpoint
from ledger.directory import LedgerDirectoryError, parse_directory
from ledger.entry import parse_entry
from ledger.errors import LedgerDamageError, LedgerError, StorageError, VerificationError
from ledger.merkle import verify_inclusion
from ledger.proof_document import PROOF_FIELDS, check_proof_document
from ledger.store import LedgerStore
from ledger.verify import DirectoryFileError, verify_bundle
from node.admin.client import invoke
from node.audit.recorder import ledger_path
from node.cli import exit_codes
from node.cli.exit_codes import UsageError
from node.cli.node_output import warn_if_unseen
from node.config import NodeConfig, load_config
from node.errors import ConfigError, OutputError
from node.identity.keys import load_ed25519

__all__ = ["register"]

_GROUP_HELP = """\
Every access to this department's data, allowed or denied, is an entry in a
hash-chained, Merkle-checkpointed ledger. Checkpoints are signed by this node
and cosigned by witness departments; a checkpoint counts as published once the
federation's witness threshold is met. Auditors verify exported bundles offline.

examples:
  fednode ledger checkpoint                     sign and collect witness cosignatures
  fednode ledger show --type share --since 2h   recent share entries
  fednode ledger export --out audit-2026-q4.zip
  fednode ledger verify --ca federation-ca.pem audit-a.zip audit-b.zip
                                                (offline; cross-checks shares)
  fednode ledger prove 1234                     operator: proof of entry 1234 for an auditor
  fednode ledger fsck                           rebuild the tree, check every checkpoint
"""

_VERIFY_HELP = """\
Verify auditor bundles offline: every entry (canonical form, seq, hash chain),
every checkpoint (log signature, Merkle root recomputed from the entries,
witness cosignatures against the federation's k-of-n policy, consistency with
the previous checkpoint). Given bundles from several departments, they are
checked against each other: every share (the sender's share.sent, the
receiver's share.received and the receipt signed by the receiver must agree),
and every checkpoint a witness recorded cosigning must match the witnessed
log's entries, so a log cut back or rewritten after it was witnessed fails
even if its bundle leaves its checkpoints out. Give the witnesses' bundles
too for that check.

Entries after a log's last published checkpoint are chained but could still
be rewritten by that node; verify prints how many. --require-published makes
them a failure (exit 7), for audits that must rest on witnessed history only.

Each bundle carries the signed federation directory it was exported with;
verify prints its serial and witness threshold. Whether a checkpoint is
published (cosigned by enough witnesses) is decided by the newest directory
among the bundles given, so a bundle cannot pick an older directory that
asked for fewer witnesses. With a single bundle, give --min-directory-serial N,
the serial of the newest directory you know (from the federation authority):
a bundle carrying an older directory then fails (exit 7).

--directory FILE (repeatable) adds a signed federation directory you hold,
the same directory.json file a node installs, as key history. After a
department enrolled again under new keys, the receipts it signed and the
checkpoints it cosigned under its earlier key verify only under a directory
that named that key: give the directory file of that time when you hold no
bundle carrying it. Each file must verify under --ca (with --trust-bundle-ca,
the bundles' CA) and be of the bundles' federation, or verify refuses it
naming the file (exit 7; a missing file exits 2). A file older than the
newest directory only adds keys: the witness policy still comes from the
newest directory, so it cannot lower the threshold. An earlier key vouches
only for what it signed before the department's log under its new key began:
given that log's bundle, a receipt under the earlier key recorded later than
that (beyond a minute of clock skew) fails. verify prints the serial and
federation of each file it loaded.

Trust starts from --ca FILE: the federation CA certificate you got from the
federation authority over a channel you trust. It is required: the ca.pem
inside a bundle proves nothing, because anyone can make a CA and sign a
directory of their own keys with it. --trust-bundle-ca uses the bundles' own
ca.pem instead; that checks only that the bundles are internally consistent,
and verify says so with a warning.

The first violation is printed on one line (bundle, entry seq or checkpoint
size, what is wrong) and the exit code is 7. A missing or unreadable --ca
file exits 2. verify needs no node, so --home is not used.

examples:
  fednode ledger verify --ca federation-ca.pem health.zip
  fednode ledger verify --ca federation-ca.pem health.zip transport.zip
  fednode ledger verify --ca federation-ca.pem --require-published *.zip
  fednode ledger verify --ca federation-ca.pem --require-published \\
      --min-directory-serial 4 health.zip
  # traffic enrolled again after directory serial 1; you keep that file:
  fednode ledger verify --ca federation-ca.pem \\
      --directory directory-serial-1.json traffic.zip security.zip
"""

_PROVE_HELP = """\
For the node operator: produce the inclusion proof of entry SEQ against the
latest checkpoint that met the witness threshold, for an auditor to check
offline. It asks the running node over its admin socket (so it runs on the
node's machine with access to --home) and checks the proof against this
node's own signing key before printing it. With --json it prints a proof
document: the entry, its inclusion path, the cosigned checkpoint and the
node's signed federation directory. The auditor checks it without the node,
with 'fednode ledger check-proof'.

exit codes: 2 if SEQ is not an entry of this ledger; 7 if the proof does not
verify.

example:
  fednode ledger prove 1234 --json > proof-1234.json
"""

_CHECK_PROOF_HELP = """For an auditor: check a proof document that a node's operator produced with
'fednode ledger prove SEQ --json', offline and without trusting the node.
Trust starts from --ca FILE, the federation CA certificate you got from the
federation authority over a channel you trust. The command checks the
directory in the document under that CA, the checkpoint's signature by the
department's log key from that directory, that enough witnesses (the
directory's threshold, the log itself never counting) cosigned it, and that
the entry lies on the inclusion path to the checkpoint's root. It prints the
entry's department, seq and event, and the cosigners.

Give --min-directory-serial N, the serial of the newest directory you know,
to refuse a proof made under an older directory (one that may have asked for
fewer witnesses).

exit codes: 0 the proof holds; 2 the file is not a proof document or --ca is
unusable; 7 a check failed (the message names which).

example:
  fednode ledger check-proof proof-1234.json --ca federation-ca.pem
"""

_FSCK_HINT = (
    "stop the node, keep the damaged ledger/ as evidence, restore ledger/ from the last "
    "backup (docs/operations.md, Backups), and run 'fednode ledger fsck' again"
)


class LedgerIntegrityError(VerificationError):
    """An integrity failure the CLI reports with a hint: ledger damage or a witness fork."""

    def __init__(self, message: str, *, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _entry_seq(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: entry numbers (seq) start at 0")
    return value


def _positive(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give at least 1")
    return value


_DURATION = re.compile(r"(\d+)([smhd])\Z")
_SINCE_FORMS = (
    "a duration back from now (45s, 30m, 2h, 7d) or an ISO date or time, UTC unless it "
    "has an offset (2026-11-28, 2026-11-28T09:00, 2026-11-28T09:00+08:00)"
)


def _since_ms(text: str) -> int:
    """Parse ``--since``: milliseconds since the epoch.

    Raises:
        argparse.ArgumentTypeError: ``text`` is neither form.
    """
    match = _DURATION.match(text)
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return int((time.time() - seconds) * 1000)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: give {_SINCE_FORMS}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "ledger",
        help="the audit ledger: checkpoint, export, show, fsck; verify (auditor, offline)",
        description=_GROUP_HELP,
    )
    commands = group.add_subparsers(dest="command", metavar="COMMAND")

    checkpoint = commands.add_parser(
        "checkpoint",
        help="sign a checkpoint and collect witness cosignatures",
        description="Sign a checkpoint over every entry so far and send it, with a consistency\n"
        "proof, to each witness department. Prints who cosigned. Exits 0 once the\n"
        "witness threshold is met, and 5 (peer) if too few witnesses cosigned: retry\n"
        "later. A witness that refuses the checkpoint as inconsistent with the history\n"
        "it already cosigned (a fork or rollback) is an incident: exit 7, naming the\n"
        "witness, even when the others met the threshold.\n\n"
        "example:\n  fednode ledger checkpoint",
    )
    checkpoint.add_argument("--json", action="store_true", help="print the result as JSON")
    checkpoint.set_defaults(handler=_checkpoint)

    export = commands.add_parser(
        "export",
        help="write an auditor bundle (directory or .zip)",
        description="Write the entries, published checkpoints with cosignatures, consistency\n"
        "proofs and the federation directory into a bundle an auditor can verify offline.\n\n"
        "Entries after the last published checkpoint are included as a tail that\n"
        "verify reports as not yet covered; --published-only leaves them out, so the\n"
        "bundle passes 'verify --require-published' (run 'fednode ledger checkpoint'\n"
        "first: the export's own audit entries always come after any checkpoint).\n\n"
        "examples:\n  fednode ledger export --out audit.zip\n"
        "  fednode ledger export --out /srv/audit/2026-11-28\n"
        "  fednode ledger checkpoint && fednode ledger export --published-only --out audit.zip",
    )
    export.add_argument(
        "--out",
        type=Path,
        required=True,
        help="new path; a name ending .zip (any case) makes a zip",
    )
    export.add_argument(
        "--published-only",
        action="store_true",
        help="end the bundle at the last published checkpoint (for --require-published audits)",
    )
    export.set_defaults(handler=_export)

    verify = commands.add_parser("verify", help="verify bundles offline", description=_VERIFY_HELP)
    verify.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE")
    trust = verify.add_mutually_exclusive_group()
    trust.add_argument(
        "--ca",
        type=Path,
        metavar="FILE",
        help="the federation CA certificate (PEM) from the authority; required",
    )
    trust.add_argument(
        "--trust-bundle-ca",
        action="store_true",
        help="check against each bundle's own ca.pem instead (consistency only; warns)",
    )
    # Declared here so that --help says it is unused; main adds it to every other command.
    verify.add_argument(
        "--home", type=Path, default=argparse.SUPPRESS, help="not used: verify needs no node"
    )
    verify.add_argument(
        "--require-published",
        action="store_true",
        help="fail if any entry is covered by no published or witnessed checkpoint",
    )
    verify.add_argument(
        "--min-directory-serial",
        type=_whole_number,
        default=0,
        metavar="N",
        help="fail if a bundle carries a federation directory older than serial N "
        "(e.g. --min-directory-serial 4)",
    )
    verify.add_argument(
        "--directory",
        dest="directories",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a signed federation directory file you hold, as key history for a department "
        "that enrolled again (repeatable; e.g. --directory directory-serial-1.json)",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=_verify)

    prove = commands.add_parser(
        "prove",
        help="operator: inclusion proof of one entry, for an auditor to check offline",
        description=_PROVE_HELP,
    )
    prove.add_argument("seq", type=_entry_seq, metavar="SEQ", help="the entry number (from 0)")
    prove.add_argument("--json", action="store_true", help="print the proof as JSON")
    prove.set_defaults(handler=_prove)

    check_proof = commands.add_parser(
        "check-proof",
        help="auditor: check a proof from 'ledger prove --json' offline",
        description=_CHECK_PROOF_HELP,
    )
    check_proof.add_argument("file", type=Path, metavar="PROOF", help="a 'prove --json' file")
    check_proof.add_argument(
        "--ca", type=Path, required=True, metavar="FILE", help="the federation CA certificate"
    )
    check_proof.add_argument(
        "--min-directory-serial",
        type=_whole_number,
        default=0,
        metavar="N",
        help="fail if the proof carries a federation directory older than serial N",
    )
    check_proof.add_argument("--json", action="store_true", help="print the result as JSON")
    check_proof.set_defaults(handler=_check_proof)

    show = commands.add_parser(
        "show",
        help="list recent entries as a table",
        description="Show recent entries, newest last.\n\n"
        "examples:\n  fednode ledger show\n"
        "  fednode ledger show --type share.sent --peer transport\n"
        "  fednode ledger show --since 2026-11-28T09:00 --dataset visits",
    )
    show.add_argument(
        "--since",
        type=_since_ms,
        help="ISO date/time (UTC unless given an offset) or a duration such as 30m, 2h, 7d",
    )
    show.add_argument(
        "--type", dest="event", help="event type or prefix, e.g. share or rpc.started"
    )
    show.add_argument("--peer", help="only entries with this peer department")
    show.add_argument("--dataset", help="only entries about this dataset")
    show.add_argument(
        "--limit", type=_positive, default=50, help="at most this many rows, 1 or more (default 50)"
    )
    show.add_argument("--json", action="store_true", help="print the entries as JSON")
    show.set_defaults(handler=_show)

    fsck = commands.add_parser(
        "fsck",
        help="rebuild the tree from the stored entries and check every checkpoint",
        description="Open the ledger file in --home, re-hash every entry, check the chain, the\n"
        "tree cache, every stored checkpoint's root, signature and witness\n"
        "cosignatures, and the record of the last size signed. Damage of any kind\n"
        "(missing or corrupt entries, a file SQLite cannot read, checkpoints lost\n"
        "after signing) exits 7; restore from backup (docs/operations.md, Backups).\n\n"
        "example:\n  fednode ledger fsck --home /srv/fednode",
    )
    fsck.set_defaults(handler=_fsck)

    erase = commands.add_parser(
        "erase",
        help="crypto-shred one sensitive value (the entry and proofs stay valid)",
        description="Delete the stored value and salt behind a committed field, for example\n"
        "when a person named in it asks for erasure. The entry keeps its commitment,\n"
        "so the chain, roots and proofs are unchanged. Committed fields are listed in\n"
        "each entry's 'sensitive' (see 'fednode ledger show --json'): a revocation\n"
        "reason (detail.reason) and the signed notice that repeats it (detail.notice)\n"
        "in agreement.revoked and agreement.revocation_sent entries.\n\n"
        "The value leaves the ledger file's bytes too (free space and write-ahead log).\n"
        "Erasing a revocation reason also erases the copy kept with the agreement on\n"
        "this node ('fednode agreement show' prints it as erased). The other party keeps\n"
        "its own ledger and agreement store; its operator erases them on its node.\n"
        "Running the command again finishes an erasure that was cut short. While another\n"
        "program reads the file (a backup, an sqlite3 shell) it waits a few seconds,\n"
        "then exits 11 (busy) with the value deleted: run it again once that is done.\n\n"
        "example:\n  fednode ledger erase 1234 detail.reason",
    )
    erase.add_argument("seq", type=_entry_seq, metavar="SEQ", help="the entry number (from 0)")
    erase.add_argument("field", help="a committed field path, e.g. detail.reason")
    erase.set_defaults(handler=_erase)


def _invoke(
    args: argparse.Namespace, command: str, params: dict[str, Any], on_event: Any = None
) -> dict[str, Any]:
    return invoke(args.home, command, params, on_event)


def _checkpoint(args: argparse.Namespace) -> int:
    console = Console()
    incidents: dict[str, str] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "witness_failed" and event.get("incident"):
            incidents[str(event["witness"])] = str(event["reason"])
        if not args.json:
            if event.get("event") == "signed":
                console.print(f"signed checkpoint of size {event['size']}")
            elif event.get("event") == "cosigned":
                console.print(f"  cosigned by {event['witness']}")
            elif event.get("event") == "witness_failed":
                label = "[bold red]INCIDENT[/]" if event.get("incident") else "[yellow]failed[/]"
                witness, reason = escape(str(event["witness"])), escape(str(event["reason"]))
                console.print(f"  {label}: no cosignature from {witness}: {reason}")

    result = _invoke(args, "ledger.checkpoint", {}, on_event)
    incidents.update(result.get("incidents") or {})
    result["incidents"] = incidents
    # Too few cosignatures means witnesses were unreachable or refused: a peer
    # problem (exit 5) for a scheduled run to retry, not an integrity failure.
    code = 0 if result["published"] else exit_codes.PEER
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        state = "published" if result["published"] else "NOT published"
        console.print(
            f"size {result['size']}: {len(result['cosigners'])} cosignature(s), "
            f"threshold {result['threshold']}: {state}"
        )
    if incidents:
        # A witness holding a different history is a fork or a rollback of this
        # log, whatever the other witnesses said: never report it as success.
        names = ", ".join(sorted(incidents))
        first = sorted(incidents)[0]
        raise LedgerIntegrityError(
            f"witness incident: {names} refused size {result['size']} as inconsistent with "
            f"the history it cosigned ({incidents[first]})",
            hint="treat it as an incident: run 'fednode ledger fsck' here with the node "
            f"stopped, compare with {first}'s witness.incident entry, and tell the auditors",
        )
    return code


def _export_target(path: Path) -> Path:
    """Resolve ``--out`` and refuse a path no bundle can be written to, before asking the node.

    Raises:
        OutputError: the path exists, or an existing ancestor is not a
            writable directory.
    """
    out = path.expanduser().resolve()
    if out.exists() or out.is_symlink():
        raise OutputError(
            f"{out} already exists", hint="choose a new path: a bundle never replaces anything"
        )
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(
            f"cannot write {out}: {ancestor} is a file, not a directory",
            hint="choose --out inside a directory",
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {out}: {ancestor} is not writable")
    return out


def _export(args: argparse.Namespace) -> int:
    out = _export_target(args.out)
    result = _invoke(
        args, "ledger.export", {"out": str(out), "published_only": args.published_only}
    )
    kind = "zip" if out.suffix.lower() == ".zip" else "directory"
    print(
        f"wrote {result['path']} ({kind}): {result['entries']} entries, "
        f"{len(result['checkpoints'])} published checkpoint(s)"
    )
    if result["unpublished_checkpoints"]:
        print(f"left out unpublished checkpoints: {result['unpublished_checkpoints']}")
    warn_if_unseen(Path(result["path"]))
    return 0


_CA_HINT = (
    "pass --ca FILE with the federation CA certificate (PEM) you got from the federation authority"
)


def _read_ca(path: Path) -> bytes:
    """Read and parse the ``--ca`` certificate.

    Raises:
        UsageError: the file is missing, unreadable, or not a PEM certificate.
    """
    if path.is_dir():
        raise UsageError(f"--ca {path} is a directory, not a certificate file", hint=_CA_HINT)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"--ca {path}: no such file", hint=_CA_HINT) from None
    except OSError as e:
        raise UsageError(f"--ca {path} cannot be read: {e.strerror or e}", hint=_CA_HINT) from e
    try:
        x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise UsageError(
            f"--ca {path} is not a PEM certificate",
            hint="give the CA certificate file itself (it starts with "
            "'-----BEGIN CERTIFICATE-----')",
        ) from e
    return data


_BUNDLE_CA_WARNING = (
    "WARNING: directories were checked against the bundles' own ca.pem, not verified "
    "against a CA you trust; a forged bundle with its own CA passes this check"
)


def _verify(args: argparse.Namespace) -> int:
    if args.ca is None and not args.trust_bundle_ca:
        raise UsageError(
            "verify needs --ca FILE, the federation CA certificate: a bundle's own ca.pem "
            "proves nothing, because anyone can make a CA and sign a directory with it",
            hint=f"{_CA_HINT}; --trust-bundle-ca checks only internal consistency",
        )
    missing = [str(p) for p in args.bundles if not p.exists()]
    if missing:
        # A mistyped path is the auditor's mistake, not evidence of tampering.
        raise UsageError(
            f"no such bundle: {', '.join(missing)}",
            hint="give the directory or .zip that 'fednode ledger export' wrote",
        )
    unusable = [str(p) for p in args.directories if not p.is_file()]
    if unusable:
        raise UsageError(
            f"--directory: no such file (or not a file): {', '.join(unusable)}",
            hint="give the signed directory.json file the federation authority published",
        )
    ca = _read_ca(args.ca) if args.ca is not None else None
    if ca is None:
        print(_BUNDLE_CA_WARNING, file=sys.stderr)
    try:
        report = verify_bundle(
            args.bundles,
            ca_pem=ca,
            require_published=args.require_published,
            min_directory_serial=args.min_directory_serial,
            directories=args.directories,
        )
    except DirectoryFileError as e:
        e.hint = (  # type: ignore[attr-defined]
            "give the federation's own signed directory file, unaltered, and the CA "
            "certificate of the same federation; a file that still fails is not the "
            "federation's"
        )
        raise
    except LedgerError as e:
        if getattr(e, "hint", None) is None:
            directory_refused = isinstance(e, LedgerDirectoryError) or isinstance(
                e.__cause__, LedgerDirectoryError
            )
            e.hint = (  # type: ignore[attr-defined]
                f"the directory is not signed by the CA in {args.ca}: check that it is this "
                "federation's CA certificate; if it is, the bundle is forged or altered"
                if ca is not None and directory_refused
                else "keep the bundle as evidence and ask the department for its "
                "'fednode ledger fsck' output and a fresh export; a second failure is an incident"
            )
        raise
    trusted = (
        {"source": "file", "path": str(args.ca)}
        if ca is not None
        else {
            "source": "bundle",
            "warning": _BUNDLE_CA_WARNING,
        }
    )
    if args.json:
        print(
            json.dumps(
                {
                    "ca": trusted,
                    "bundles": [
                        {
                            "path": str(b.path),
                            "origin": b.origin,
                            "entries": b.entries,
                            "checkpoints": b.checkpoints,
                            "published_size": b.published_size,
                            "root": base64.b64encode(b.root).decode(),
                            "unchecked_tail": b.tail,
                            "witnessed_size": b.witnessed_size,
                            "directory_signature_checked": b.directory_signature_checked,
                            "directory_serial": b.directory_serial,
                            "directory_witness_threshold": b.directory_threshold,
                        }
                        for b in report.bundles
                    ],
                    "directories": [
                        {
                            "path": str(d.path),
                            "federation": d.federation,
                            "serial": d.serial,
                            "witness_threshold": d.witness_threshold,
                        }
                        for d in report.directories
                    ],
                    "witness_policy": {
                        "directory_serial": report.policy_serial,
                        "witness_threshold": report.policy_threshold,
                    },
                    "shares_checked": report.shares_checked,
                    "shares_receipt_only": report.shares_unmatched_peers,
                    "witnessed_checkpoints_checked": report.witnessed_checked,
                    "notes": report.notes,
                    "seconds": round(report.seconds, 3),
                },
                indent=2,
            )
        )
        return 0
    for b in report.bundles:
        ca_note = "" if b.directory_signature_checked else " (directory signature NOT checked)"
        print(
            f"ok {b.path}: {b.origin}, {b.entries} entries, {len(b.checkpoints)} checkpoint(s), "
            f"published up to size {b.published_size}{ca_note}"
        )
        print(
            f"   directory serial {b.directory_serial}, witness threshold {b.directory_threshold}"
        )
        if b.witnessed_size > b.published_size:
            print(f"   witnesses' bundles confirm entries 0..{b.witnessed_size - 1} as cosigned")
        uncovered = b.entries - max(b.published_size, b.witnessed_size)
        if uncovered:
            print(
                f"   {uncovered} entries after the last published checkpoint are chained only: "
                "the node could still rewrite them (--require-published fails on this)"
            )
    for d in report.directories:
        role = "key history" if d.serial < report.policy_serial else "key history and policy"
        print(
            f"directory {d.path}: serial {d.serial}, federation {d.federation}, witness "
            f"threshold {d.witness_threshold} (signature checked; {role})"
        )
    newest_from = "the bundles and --directory files" if report.directories else "the bundles"
    print(
        f"witness policy: directory serial {report.policy_serial}, witness threshold "
        f"{report.policy_threshold} (the newest directory among {newest_from})"
    )
    print(
        f"verified {report.entries} entries, {report.shares_checked} cross-checked share(s) and "
        f"{report.witnessed_checked} witnessed checkpoint(s) in {report.seconds:.2f}s"
    )
    for note in report.notes:
        print(f"note: {note}")
    if report.shares_unmatched_peers:
        print(
            f"{report.shares_unmatched_peers} share(s) went to departments whose bundle was not "
            "given: their receipts were checked, their receiving side was not"
        )
    if ca is None:
        print("CA: the bundles' own ca.pem (not a CA you trust); see the warning above")
    return 0


def _ledger_size(args: argparse.Namespace) -> int:
    result = _invoke(args, "ledger.show", {"limit": 1})
    return int(result["size"])


def _prove(args: argparse.Namespace) -> int:
    try:
        result = _invoke(args, "ledger.prove", {"seq": args.seq})
    except StorageError:
        size = _ledger_size(args)
        if args.seq >= size:
            last = f" (seq 0 to {size - 1})" if size else ""
            raise UsageError(
                f"entry {args.seq} does not exist: the ledger holds {size} entries{last}",
                hint="list entries with 'fednode ledger show'",
            ) from None
        raise
    entry = parse_entry(result["entry"].encode())
    proof = [base64.b64decode(h) for h in result["proof"]]
    config = load_config(args.home)
    checkpoint = verify_checkpoint(
        result["note"].encode(),
        result["origin"],
        load_ed25519(config.signing_key_path).public_key(),
    )
    verify_inclusion(entry.leaf, entry.seq, checkpoint.size, proof, checkpoint.root)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"entry {entry.seq} ({entry.event}) is included in checkpoint size {checkpoint.size}")
    print(f"leaf  {entry.leaf.hex()}")
    print(f"root  {checkpoint.root.hex()}")
    for i, h in enumerate(proof):
        print(f"proof[{i}] {h.hex()}")
    print("checkpoint:")
    print(result["note"], end="")
    return 0


def _check_proof(args: argparse.Namespace) -> int:
    ca = _read_ca(args.ca)
    try:
        document = json.loads(args.file.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"{args.file}: no such file") from None
    except IsADirectoryError:
        raise UsageError(
            f"{args.file} is a folder, not a proof document",
            hint="bundles (folders and .zip files) are checked with 'fednode ledger verify'",
        ) from None
    except OSError as e:
        raise UsageError(f"{args.file} cannot be read: {e.strerror or e}") from e
    except ValueError:
        document = None
    missing = (
        [f for f in PROOF_FIELDS if f not in document]
        if isinstance(document, dict)
        else list(PROOF_FIELDS)
    )
    if missing:
        raise UsageError(
            f"{args.file} is not a proof document (it lacks {', '.join(missing)})",
            hint="the node's operator writes one with 'fednode ledger prove SEQ --json'; "
            "bundles are checked with 'fednode ledger verify'",
        )
    checked = check_proof_document(document, ca, min_directory_serial=args.min_directory_serial)
    if args.json:
        print(
            json.dumps(
                {
                    "department": checked.department,
                    "origin": checked.origin,
                    "seq": checked.seq,
                    "event": checked.event,
                    "checkpoint_size": checked.size,
                    "root": checked.root.hex(),
                    "cosigners": list(checked.cosigners),
                    "threshold": checked.threshold,
                    "directory_serial": checked.directory_serial,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"entry {checked.seq} ({checked.event}) of {checked.department}'s ledger is in its "
        f"checkpoint of size {checked.size}"
    )
    print(
        f"  cosigned by {len(checked.cosigners)} witness(es), threshold {checked.threshold} "
        f"(directory serial {checked.directory_serial}): {', '.join(checked.cosigners) or '-'}"
    )
    print(f"  root {checked.root.hex()}")
    return 0


def _show(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.since is not None:
        params["since_ms"] = args.since
    for name in ("event", "peer", "dataset"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    result = _invoke(args, "ledger.show", params)
    if args.json:
        print(json.dumps(result["entries"], indent=2))
        return 0
    if not result["entries"]:
        print(f"no matching entries among the last of {result['size']} entries")
        return 0
    console = Console()
    table = Table(title=f"ledger ({result['size']} entries)")
    entries = result["entries"]
    rows = [_show_row(e) for e in entries]
    # Widths are set here, not left to rich, which shrinks any column to nothing
    # on a narrow terminal. The seq (which 'prove' and 'erase' take), the time,
    # the event (share.sent and share.received differ only at the end) and the
    # outcome stay whole; the actor or peer keeps enough to tell departments
    # apart; the dataset and then the detail get what is left, or are left out.
    names = ("seq", "time (UTC)", "event", "actor/peer", "dataset", "outcome", "detail")
    longest = [max(len(name), *(len(row[i]) for row in rows)) for i, name in enumerate(names)]
    widths = dict(zip(names, longest, strict=True))
    widths["actor/peer"] = min(widths["actor/peer"], 16)
    flexible = {"dataset": min(widths["dataset"], 12), "detail": min(widths["detail"], 60)}
    fixed = sum(w for n, w in widths.items() if n not in flexible)

    def room(columns: int) -> int:
        return console.width - (1 + 3 * columns) - fixed  # borders and padding

    shown = [n for n in names if n not in flexible]
    if room(len(names)) >= flexible["dataset"] + 10:
        widths["dataset"] = flexible["dataset"]
        widths["detail"] = min(flexible["detail"], room(len(names)) - widths["dataset"])
        shown = list(names)
    elif room(len(names) - 1) >= 7:
        widths["dataset"] = min(flexible["dataset"], room(len(names) - 1))
        shown = [n for n in names if n != "detail"]
    for name in shown:
        table.add_column(name, no_wrap=True, width=widths[name], overflow="ellipsis")
    for row in rows:
        table.add_row(*(cell for name, cell in zip(names, row, strict=True) if name in shown))
    console.print(table)
    return 0


def _show_row(e: dict[str, Any]) -> tuple[str, ...]:
    """One ``ledger show`` row: seq, time, event, actor/peer, dataset, outcome, detail."""
    when = dt.datetime.fromtimestamp(e["time"] / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    who = e["actor"] or e["peer"] or ""
    if e["actor"] and e["peer"]:
        who = f"{e['actor']} / {e['peer']}"
    detail = json.dumps(e["detail"], separators=(",", ":"))
    return (
        str(e["seq"]),
        when,
        str(e["event"]),
        who,
        e["dataset"] or "",
        str(e["outcome"]),
        detail,
    )


def _witness_keys(config: NodeConfig) -> dict[str, Ed25519PublicKey]:
    """The witnesses' cosignature keys from the directory in ``--home``.

    Raises:
        ConfigError: the directory or CA file is missing or malformed.
    """
    try:
        raw = config.directory_path.read_bytes()
        ca = config.ca_cert_path.read_bytes()
        directory = parse_directory(raw, ca)
    except OSError as e:
        raise ConfigError(
            f"cannot read the federation directory or CA in {config.home}: {e}",
            hint="fsck checks cosignatures with the installed directory; restore "
            "directory.json and ca.pem with the rest of the home",
        ) from e
    except LedgerError as e:
        raise ConfigError(
            f"{config.directory_path}: {e}",
            hint="install the federation directory again from the authority",
        ) from e
    return directory.witness_keys(exclude=config.department)


def _fsck(args: argparse.Namespace) -> int:
    config = load_config(args.home)
    path = ledger_path(config)
    if not path.exists():
        raise ConfigError(
            f"no ledger at {path}", hint="check --home; a node creates its ledger on first start"
        )
    public = load_ed25519(config.signing_key_path).public_key()
    origin = f"fednode/{config.federation}/{config.department}"
    witnesses = _witness_keys(config)
    try:
        store = LedgerStore(path, config.department)
    except LedgerDamageError as e:
        raise LedgerIntegrityError(f"fsck: {e}", hint=_FSCK_HINT) from e
    with store, Progress() as progress:
        task = progress.add_task("checking entries", total=max(store.size, 1))
        try:
            report = store.fsck(
                public,
                origin,
                lambda done, total: progress.update(task, completed=done),
                witnesses=witnesses,
            )
        except StorageError as e:
            # Damage found by fsck is an integrity failure (exit 7), not a config problem.
            raise LedgerIntegrityError(f"fsck: {e}", hint=_FSCK_HINT) from e
    print(
        f"ok {path}: {report.size} entries, {report.checkpoints} checkpoint(s), "
        f"{report.nodes} tree nodes, {report.secrets} stored sensitive value(s); "
        f"root {report.root.hex()}"
    )
    return 0


def _erase(args: argparse.Namespace) -> int:
    waiting: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        # Said once: the node tries again every fraction of a second for a few seconds.
        if event.get("event") == "waiting" and not waiting:
            waiting.append(str(event.get("file")))
            print(
                "another process is reading the ledger file; waiting a few seconds for it "
                "to finish before the erasure can remove the last copy",
                file=sys.stderr,
                flush=True,
            )

    result = _invoke(args, "ledger.erase", {"seq": args.seq, "field": args.field}, on_event)
    if result.get("already_erased"):
        print(
            f"{result['field']} of entry {result['seq']} was already erased "
            f"(recorded again as entry {result['recorded_as']})"
        )
    else:
        print(
            f"erased {result['field']} of entry {result['seq']} "
            f"(recorded as entry {result['recorded_as']})"
        )
    if result.get("agreement_reason_erased"):
        print(f"the reason kept with agreement {result['agreement']} on this node is erased too")
        if result.get("other_party"):
            print(
                f"{result['other_party']} keeps its own copy: its operator runs "
                "'fednode ledger erase' on its node"
            )
    for left in result.get("still_held") or []:
        print(
            f"entry {left['seq']} ({left['event']}) still holds the same reason in "
            f"{left['field']}: fednode ledger erase {left['seq']} {left['field']}"
        )
    return 0

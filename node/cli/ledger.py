"""``fednode ledger``: checkpoint, export, verify, prove, show, fsck and erase the audit ledger.

``verify`` runs offline and needs no node; ``fsck`` opens the ledger file in
``--home`` directly; the other commands ask the running node over its admin
socket.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ledger.checkpoint import verify_checkpoint
from ledger.entry import parse_entry
from ledger.errors import LedgerError, StorageError, VerificationError
from ledger.merkle import verify_inclusion
from ledger.store import LedgerStore
from ledger.verify import verify_bundle
from node.admin.client import invoke
from node.audit.recorder import ledger_path
from node.cli import exit_codes
from node.config import load_config
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
  fednode ledger verify audit-a.zip audit-b.zip (offline; cross-checks shares)
  fednode ledger prove 1234                     inclusion proof for entry 1234
  fednode ledger fsck                           rebuild the tree, check every checkpoint
"""

_VERIFY_HELP = """\
Verify auditor bundles offline: every entry (canonical form, seq, hash chain),
every checkpoint (log signature, Merkle root recomputed from the entries,
witness cosignatures against the federation's k-of-n policy, consistency with
the previous checkpoint). Given bundles from several departments, every share
is cross-checked: the sender's share.sent, the receiver's share.received, and
the receipt signed by the receiver must agree.

The first violation is printed on one line (bundle, entry seq or checkpoint
size, what is wrong) and the exit code is 7.

examples:
  fednode ledger verify health.zip
  fednode ledger verify health.zip transport.zip --ca federation-ca.pem
"""


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "ledger",
        help="auditor: export, verify and prove the audit ledger",
        description=_GROUP_HELP,
    )
    commands = group.add_subparsers(dest="command", metavar="COMMAND")

    checkpoint = commands.add_parser(
        "checkpoint",
        help="sign a checkpoint and collect witness cosignatures",
        description="Sign a checkpoint over every entry so far and send it, with a consistency\n"
        "proof, to each witness department. Prints who cosigned. Exits 0 once the\n"
        "witness threshold is met, and 5 (peer) if too few witnesses cosigned: retry\n"
        "later; a witness reporting an inconsistent checkpoint is an incident.\n\n"
        "example:\n  fednode ledger checkpoint",
    )
    checkpoint.add_argument("--json", action="store_true", help="print the result as JSON")
    checkpoint.set_defaults(handler=_checkpoint)

    export = commands.add_parser(
        "export",
        help="write an auditor bundle (directory or .zip)",
        description="Write the entries, published checkpoints with cosignatures, consistency\n"
        "proofs and the federation directory into a bundle an auditor can verify offline.\n\n"
        "examples:\n  fednode ledger export --out audit.zip\n"
        "  fednode ledger export --out /srv/audit/2026-11-28",
    )
    export.add_argument("--out", type=Path, required=True, help="new path; .zip writes a zip")
    export.set_defaults(handler=_export)

    verify = commands.add_parser("verify", help="verify bundles offline", description=_VERIFY_HELP)
    verify.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE")
    verify.add_argument(
        "--ca", type=Path, help="federation CA certificate to check the directory with"
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=_verify)

    prove = commands.add_parser(
        "prove",
        help="inclusion proof of one entry against the latest published checkpoint",
        description="Fetch the inclusion proof of entry SEQ against the latest checkpoint that\n"
        "met the witness threshold, check it here, and print it.\n\n"
        "example:\n  fednode ledger prove 1234",
    )
    prove.add_argument("seq", type=int)
    prove.add_argument("--json", action="store_true", help="print the proof as JSON")
    prove.set_defaults(handler=_prove)

    show = commands.add_parser(
        "show",
        help="list recent entries as a table",
        description="Show recent entries, newest last.\n\n"
        "examples:\n  fednode ledger show\n"
        "  fednode ledger show --type share.sent --peer transport\n"
        "  fednode ledger show --since 2026-11-28T09:00 --dataset visits",
    )
    show.add_argument("--since", help="ISO date/time (UTC) or a duration such as 30m, 2h, 7d")
    show.add_argument(
        "--type", dest="event", help="event type or prefix, e.g. share or rpc.started"
    )
    show.add_argument("--peer", help="only entries with this peer department")
    show.add_argument("--dataset", help="only entries about this dataset")
    show.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")
    show.add_argument("--json", action="store_true", help="print the entries as JSON")
    show.set_defaults(handler=_show)

    fsck = commands.add_parser(
        "fsck",
        help="rebuild the tree from the stored entries and check every checkpoint",
        description="Open the ledger file in --home, re-hash every entry, check the chain, the\n"
        "tree cache and every stored checkpoint's root and signature.\n\n"
        "example:\n  fednode ledger fsck --home /srv/fednode",
    )
    fsck.set_defaults(handler=_fsck)

    erase = commands.add_parser(
        "erase",
        help="crypto-shred one sensitive value (the entry and proofs stay valid)",
        description="Delete the stored value and salt behind a committed field, for example\n"
        "when a citizen's data must be erased. The entry keeps its commitment, so the\n"
        "chain, roots and proofs are unchanged.\n\n"
        "example:\n  fednode ledger erase 1234 detail.subject",
    )
    erase.add_argument("seq", type=int)
    erase.add_argument("field", help="a sensitive field path, e.g. actor or detail.subject")
    erase.set_defaults(handler=_erase)


def _invoke(
    args: argparse.Namespace, command: str, params: dict[str, Any], on_event: Any = None
) -> dict[str, Any]:
    return invoke(args.home, command, params, on_event)


def _checkpoint(args: argparse.Namespace) -> int:
    console = Console()

    def on_event(event: dict[str, Any]) -> None:
        if not args.json:
            if event.get("event") == "signed":
                console.print(f"signed checkpoint of size {event['size']}")
            elif event.get("event") == "cosigned":
                console.print(f"  cosigned by {event['witness']}")
            elif event.get("event") == "witness_failed":
                console.print(
                    f"  [yellow]no cosignature from {event['witness']}[/]: {event['reason']}"
                )

    result = _invoke(args, "ledger.checkpoint", {}, on_event)
    # Too few cosignatures means witnesses were unreachable or refused: a peer
    # problem (exit 5) for a scheduled run to retry, not an integrity failure.
    code = 0 if result["published"] else exit_codes.PEER
    if args.json:
        print(json.dumps(result, indent=2))
        return code
    state = "published" if result["published"] else "NOT published"
    console.print(
        f"size {result['size']}: {len(result['cosigners'])} cosignature(s), "
        f"threshold {result['threshold']}: {state}"
    )
    return code


def _export(args: argparse.Namespace) -> int:
    result = _invoke(args, "ledger.export", {"out": str(args.out.resolve())})
    print(
        f"wrote {result['path']}: {result['entries']} entries, "
        f"{len(result['checkpoints'])} published checkpoint(s)"
    )
    if result["unpublished_checkpoints"]:
        print(f"left out unpublished checkpoints: {result['unpublished_checkpoints']}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    ca = args.ca.read_bytes() if args.ca else None
    report = verify_bundle(args.bundles, ca_pem=ca)
    if args.json:
        print(
            json.dumps(
                {
                    "bundles": [
                        {
                            "path": str(b.path),
                            "origin": b.origin,
                            "entries": b.entries,
                            "checkpoints": b.checkpoints,
                            "published_size": b.published_size,
                            "root": base64.b64encode(b.root).decode(),
                            "unchecked_tail": b.tail,
                            "directory_signature_checked": b.directory_signature_checked,
                        }
                        for b in report.bundles
                    ],
                    "shares_checked": report.shares_checked,
                    "shares_receipt_only": report.shares_unmatched_peers,
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
        if b.tail:
            print(f"   {b.tail} entries after the last published checkpoint are chained only")
    print(
        f"verified {report.entries} entries and {report.shares_checked} cross-checked share(s) "
        f"in {report.seconds:.2f}s"
    )
    if report.shares_unmatched_peers:
        print(
            f"{report.shares_unmatched_peers} share(s) went to departments whose bundle was not "
            "given: their receipts were checked, their receiving side was not"
        )
    return 0


def _prove(args: argparse.Namespace) -> int:
    result = _invoke(args, "ledger.prove", {"seq": args.seq})
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


_DURATION = re.compile(r"(\d+)([smhd])\Z")


def _since_ms(text: str) -> int:
    match = _DURATION.match(text)
    if match:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return int((time.time() - seconds) * 1000)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise LedgerError(
            f"--since {text!r} is neither a duration (30m, 2h) nor an ISO time"
        ) from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _show(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.since:
        params["since_ms"] = _since_ms(args.since)
    for name in ("event", "peer", "dataset"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    result = _invoke(args, "ledger.show", params)
    if args.json:
        print(json.dumps(result["entries"], indent=2))
        return 0
    table = Table(title=f"ledger ({result['size']} entries)")
    for column in ("seq", "time (UTC)", "event", "actor/peer", "dataset", "outcome", "detail"):
        table.add_column(column)
    for e in result["entries"]:
        when = dt.datetime.fromtimestamp(e["time"] / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        who = e["actor"] or e["peer"] or ""
        if e["actor"] and e["peer"]:
            who = f"{e['actor']} / {e['peer']}"
        detail = json.dumps(e["detail"], separators=(",", ":"))
        table.add_row(
            str(e["seq"]),
            when,
            e["event"],
            who,
            e["dataset"] or "",
            e["outcome"],
            detail if len(detail) <= 60 else detail[:57] + "...",
        )
    Console().print(table)
    return 0


def _fsck(args: argparse.Namespace) -> int:
    config = load_config(args.home)
    path = ledger_path(config)
    if not path.exists():
        raise LedgerError(f"no ledger at {path}")
    public = load_ed25519(config.signing_key_path).public_key()
    origin = f"fednode/{config.federation}/{config.department}"
    with LedgerStore(path, config.department) as store, Progress() as progress:
        task = progress.add_task("checking entries", total=max(store.size, 1))
        try:
            report = store.fsck(
                public, origin, lambda done, total: progress.update(task, completed=done)
            )
        except StorageError as e:
            # Damage found by fsck is an integrity failure (exit 7), not a config problem.
            raise VerificationError(f"fsck: {e}") from e
    print(
        f"ok {path}: {report.size} entries, {report.checkpoints} checkpoint(s), "
        f"{report.nodes} tree nodes, {report.secrets} stored sensitive value(s); "
        f"root {report.root.hex()}"
    )
    return 0


def _erase(args: argparse.Namespace) -> int:
    result = _invoke(args, "ledger.erase", {"seq": args.seq, "field": args.field})
    print(
        f"erased {result['field']} of entry {result['seq']} "
        f"(recorded as entry {result['recorded_as']})"
    )
    return 0

"""``fednode agreement``: draw up, countersign, import, list, show and revoke agreements."""

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

from rich.console import Console
from rich.table import Table

from ledger.canonical import dumps, loads
from ledger.errors import LedgerError
from node.admin.client import invoke
from node.agreements.document import SignedAgreement
from node.cli.exit_codes import PEER, POLICY, UsageError
from node.errors import OutputError
from node.output_path import check_output
from node.timefmt import utc_text

__all__ = [
    "MAX_AGREEMENT_FILE",
    "parse_column",
    "parse_columns",
    "parse_time",
    "parse_window",
    "register",
]

#: Largest agreement file this command reads, in bytes. A real one is a few
#: kilobytes; the bound keeps a wrongly named data file from being read whole
#: and sent to the node.
MAX_AGREEMENT_FILE = 1 << 20

_GROUP_HELP = """\
A sharing agreement says which department (the provider) lets which other
department (the consumer) use which columns of which dataset, for what purpose,
in which modes (transfer, federated, aggregate), during which window. The
provider signs it, the consumer countersigns it. Anything it does not grant is
denied, and a revocation takes effect at once, even on shares in flight.

workflow across two machines:
  provider:  fednode agreement create --consumer statistics --dataset visits \\
                 --purpose-code STAT-7 --purpose "monthly statistics" --valid-until +90d \\
                 --mode transfer --column district=plain --column person_id=pseudonymize \\
                 --column age=generalize:band=10 --column seen=generalize:to=hour \\
                 --out visits.agreement
             (send visits.agreement to the consumer)
  consumer:  fednode agreement countersign visits.agreement --push
             (or without --push: send the countersigned file back, then on the provider)
  provider:  fednode agreement import visits.agreement
  either:    fednode agreement list;  fednode agreement revoke agr-... --reason "purpose ended"
"""

_CREATE_HELP = """\
Draw up and sign an agreement as the provider; it stays 'proposed' until the
consumer countersigns it. Columns not named are never shared.

modes (--mode, repeatable):
  transfer                   the consumer fetches treated rows ('fednode share fetch')
  federated                  the consumer coordinates federated jobs on the dataset
  aggregate                  reserved for aggregate queries; nothing uses it yet

times (--valid-from, --valid-until): 2026-12-31 (00:00 UTC that day, so an
agreement ending on 2026-12-31 does not cover that day), 2026-12-31T18:00
(UTC unless an offset is given), +90d, +12h, +30m, or unix seconds.

column treatments (--column NAME=TREATMENT[:PARAM=VALUE]):
  plain                      the value as it is
  pseudonymize               HMAC-SHA256 token, stable within this agreement only
  generalize:to=hour         a timestamp or date floored to minute|hour|day|month|year
  generalize:band=10         an integer replaced by its band, e.g. "30-39"
  drop                       named but never sent

example:
  fednode agreement create --consumer statistics --dataset visits --purpose-code STAT-7 \\
      --purpose "monthly statistics" --valid-until 2026-12-31 --mode transfer \\
      --column district=plain --column person_id=pseudonymize --out visits.agreement
"""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, *, now: int | None = None) -> int:
    """Parse a time: unix seconds, ``+90d``/``+12h``/``+30m``/``+45s``, or ISO 8601 (UTC if naive).

    Raises:
        UsageError: none of these forms.
    """
    now = int(time.time()) if now is None else now
    relative = re.fullmatch(r"\+(\d+)([smhd])", text.strip())
    if relative:
        return now + int(relative.group(1)) * _UNITS[relative.group(2)]
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise UsageError(
            f"cannot read time {text!r}",
            hint="use 2026-12-31, 2026-12-31T18:00, +90d or unix seconds",
        ) from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def parse_column(text: str) -> tuple[str, dict[str, Any]]:
    """Parse ``NAME=TREATMENT[:K=V[,K=V]]`` into a column name and treatment spec.

    Raises:
        UsageError: the text does not have that shape.
    """
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise UsageError(
            f"--column {text!r} is not NAME=TREATMENT[:PARAM=VALUE]",
            hint="e.g. --column age=generalize:band=10",
        )
    treatment, _, raw_params = rest.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, raw_params.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(
                f"--column {text!r}: parameter {item!r} is not KEY=VALUE",
                hint="e.g. --column age=generalize:band=10",
            )
        params[key] = int(value) if value.isdigit() else value
    return name, {"treatment": treatment, "params": params}


def parse_columns(texts: list[str]) -> dict[str, dict[str, Any]]:
    """Parse every ``--column`` into one mapping; a column may be named once.

    Raises:
        UsageError: a value is malformed, or a column is named twice.
    """
    columns: dict[str, dict[str, Any]] = {}
    for text in texts:
        name, spec = parse_column(text)
        if name in columns:
            # Silently keeping one of two treatments would sign what the operator did not decide.
            raise UsageError(
                f"column {name!r} is named twice (--column {text!r})",
                hint=f"give {name} one treatment",
            )
        columns[name] = spec
    return columns


def parse_window(
    valid_from: str | None, valid_until: str, *, now: int | None = None
) -> tuple[int | None, int]:
    """Parse ``--valid-from`` and ``--valid-until``: the end must be future and after the start.

    Raises:
        UsageError: a time cannot be read, the end is not in the future, or
            not after the start.
    """
    now = int(time.time()) if now is None else now
    start = None if valid_from is None else parse_time(valid_from, now=now)
    end = parse_time(valid_until, now=now)
    if end <= now:
        raise UsageError(
            f"{valid_until} is in the past; use a later date or +90d",
            hint=f"--valid-until {valid_until} is {utc_text(end)}; it is now {utc_text(now)}",
        )
    if start is not None and end <= start:
        raise UsageError(
            f"--valid-until {valid_until} is not after --valid-from {valid_from}",
            hint=f"the window would run from {utc_text(start)} to {utc_text(end)}",
        )
    return start, end


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "agreement",
        help="department operator: sign and manage sharing agreements",
        description=_GROUP_HELP,
    )
    commands = group.add_subparsers(dest="command", metavar="COMMAND")

    create = commands.add_parser(
        "create", help="draw up and sign an agreement (provider)", description=_CREATE_HELP
    )
    create.add_argument(
        "--consumer",
        required=True,
        help="the receiving department's id, as in the federation directory",
    )
    create.add_argument(
        "--dataset", required=True, help="catalog name of the dataset ('fednode dataset list')"
    )
    create.add_argument("--purpose-code", required=True, help="short purpose code, e.g. STAT-7")
    create.add_argument("--purpose", default="", help="purpose in words")
    create.add_argument(
        "--valid-from", default=None, help="start, in the forms above (default: now)"
    )
    create.add_argument(
        "--valid-until", required=True, help="end, in the forms above: 2026-12-31, +90d, ..."
    )
    create.add_argument(
        "--mode",
        action="append",
        required=True,
        choices=["transfer", "federated", "aggregate"],
        help="an allowed use, see above (repeatable)",
    )
    create.add_argument(
        "--column",
        action="append",
        required=True,
        metavar="NAME=TREATMENT",
        help="a column to share and its treatment, see above (repeatable)",
    )
    create.add_argument(
        "--out", type=Path, required=True, help="where to write the signed agreement file"
    )
    create.set_defaults(handler=_create)

    cs = commands.add_parser(
        "countersign",
        help="verify and countersign an agreement (consumer)",
        description="Verify the provider's signature against the federation directory,\n"
        "countersign, and activate the agreement on this node. With --push the\n"
        "countersigned copy is delivered to the provider over the network;\n"
        "otherwise, or if the provider cannot be reached (exit 5), send the file\n"
        "back and the provider runs 'fednode agreement import FILE'.\n\n"
        "example:\n  fednode agreement countersign visits.agreement --push",
    )
    cs.add_argument("file", type=Path, help="the provider-signed agreement file")
    cs.add_argument(
        "--out", type=Path, default=None, help="countersigned copy (default: replace FILE)"
    )
    cs.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    cs.add_argument(
        "--push",
        action="store_true",
        help="deliver it to the provider now; if that fails the file is still written "
        "and the command exits 5",
    )
    cs.set_defaults(handler=_countersign)

    imp = commands.add_parser(
        "import",
        help="activate a countersigned agreement (provider)",
        description="Verify both signatures and activate an agreement this node drew up,\n"
        "from the countersigned file the consumer sent back (when they countersigned\n"
        "without --push, or the push could not reach this node).\n\n"
        "example:\n  fednode agreement import visits.agreement",
    )
    imp.add_argument("file", type=Path, help="the countersigned agreement file")
    imp.set_defaults(handler=_import)

    listing = commands.add_parser(
        "list",
        help="list agreements",
        description="List the agreements this node holds as provider or consumer, with their\n"
        "state: proposed (waiting for the consumer's countersignature), active,\n"
        "expired (past --valid-until) or revoked.\n\n"
        "example:\n  fednode agreement list",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

    show = commands.add_parser(
        "show",
        help="show one agreement",
        description="Show one agreement: its parties, dataset, purpose, modes, window,\n"
        "signatures and digest, each column's treatment, and when and why it was\n"
        "revoked.\n\nexample:\n  fednode agreement show agr-...",
    )
    show.add_argument("id", help="the agreement id, agr-... ('fednode agreement list')")
    show.add_argument("--json", action="store_true", help="print the stored record as JSON")
    show.set_defaults(handler=_show)

    revoke = commands.add_parser(
        "revoke",
        help="revoke an agreement now",
        description="Revoke an agreement on this node, effective immediately: new requests are\n"
        "refused and shares in flight stop at their next chunk. The node then sends the\n"
        "other party a signed notice, and its node revokes its copy too. If the other\n"
        "party cannot be reached, the revocation still holds here; the command says so\n"
        "and exits 5, and running it again resends the notice.\n\n"
        "example:\n  fednode agreement revoke agr-... --reason 'purpose ended'",
    )
    revoke.add_argument("id", help="the agreement id, agr-... ('fednode agreement list')")
    revoke.add_argument(
        "--reason",
        default="revoked by operator",
        help="why, in at most 500 characters; sent to the other party and kept in both "
        "nodes' ledgers and agreement stores. Avoid naming people: a reason that does "
        "can be erased later with 'fednode ledger erase', on each node",
    )
    revoke.add_argument(
        "--no-notify", action="store_true", help="do not send the other party a notice"
    )
    revoke.set_defaults(handler=_revoke)


def _write(path: Path, result: dict[str, Any]) -> None:
    """Write the signed file: a temporary file beside it, fsynced, then renamed over it."""
    body = {
        k: result[k]
        for k in ("agreement", "provider_signature", "consumer_signature")
        if k in result
    }
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("wb") as f:
            f.write(dumps(body))
            f.flush()
            os.fsync(f.fileno())
        temporary.replace(path)
    except OSError as e:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write agreement file {path}: {e.strerror or e}") from e


def _read(path: Path) -> str:
    """Read an agreement file and check locally that it is one, before the node sees it.

    Raises:
        UsageError: the file is missing, unreadable, too large or not an agreement file.
        AgreementError: it has an agreement's shape but a malformed field.
    """
    try:
        size = path.stat().st_size
        if size > MAX_AGREEMENT_FILE:
            raise UsageError(
                f"{path} is not an agreement file: {size:,} bytes, an agreement is at most "
                f"{MAX_AGREEMENT_FILE:,}",
                hint="give the .agreement file that 'fednode agreement create' wrote",
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"agreement file {path} does not exist", hint="check the path of the .agreement file"
        ) from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not an agreement file") from None
    except OSError as e:
        raise UsageError(f"cannot read agreement file {path}: {e.strerror or e}") from e
    try:
        parsed = loads(data)
    except LedgerError:
        parsed = None
    if not isinstance(parsed, dict) or "agreement" not in parsed:
        raise UsageError(
            f"{path} is not an agreement file (expected the canonical JSON that "
            "'fednode agreement create' writes)",
            hint="give the .agreement file the provider sent",
        )
    SignedAgreement.from_bytes(data)
    return base64.b64encode(data).decode()


def _until(agreement: dict[str, Any]) -> str:
    return f"{dt.datetime.fromtimestamp(agreement['valid_until'], dt.UTC):%Y-%m-%d %H:%M}"


def _summary(result: dict[str, Any]) -> str:
    a = result["agreement"]
    ends = "expired" if result["state"] == "expired" else "until"
    return (
        f"{a['id']} [{result['state']}] {a['provider']} -> {a['consumer']} dataset {a['dataset']} "
        f"modes {','.join(a['modes'])} {ends} {_until(a)} UTC"
    )


def _create(args: argparse.Namespace) -> int:
    # Every check on the command line comes before anything is signed; an
    # agreement file is evidence, never replaced.
    columns = parse_columns(args.column)
    valid_from, valid_until = parse_window(args.valid_from, args.valid_until)
    check_output(args.out)
    result = invoke(
        args.home,
        "agreement.create",
        {
            "consumer": args.consumer,
            "dataset": args.dataset,
            "purpose_code": args.purpose_code,
            "purpose_text": args.purpose,
            "valid_from": valid_from,
            "valid_until": valid_until,
            "modes": args.mode,
            "columns": columns,
        },
    )
    _write(args.out, result)
    print(_summary(result))
    print(f"signed agreement written to {args.out}; the consumer countersigns it next")
    personal = result.get("personal_plain") or []
    if personal:
        print(
            f"warning: columns labelled personal are shared plain: {', '.join(personal)}. "
            "Review them before sending the file: pseudonymize, generalize or drop them "
            "unless the purpose needs the values.",
            file=sys.stderr,
        )
    return 0


def _countersign_out(args: argparse.Namespace) -> Path:
    """The output path, checked before anything is signed.

    Raises:
        OutputError: it cannot take the file, or exists without ``--overwrite``.
    """
    if args.out is None or args.out.resolve() == args.file.resolve():
        # Replacing FILE by its countersigned copy is the documented default.
        check_output(args.file, overwrite=True)
        return Path(args.file)
    check_output(args.out, overwrite=args.overwrite, overwrite_flag="--overwrite")
    return Path(args.out)


def _countersign(args: argparse.Namespace) -> int:
    out = _countersign_out(args)
    content = _read(args.file)
    result = invoke(
        args.home, "agreement.countersign", {"agreement_b64": content, "push": args.push}
    )
    _write(out, result)
    print(_summary(result))
    print(f"countersigned copy written to {out}")
    if args.push:
        provider = result["agreement"]["provider"]
        if not result.get("pushed"):
            print(
                f"warning: could not deliver it to {provider} ({result.get('push_error')}).\n"
                f"The agreement is active on this node. Send {out} to {provider}'s operator, "
                f"who runs: fednode agreement import {out.name}",
                file=sys.stderr,
            )
            return PEER
        if result.get("provider_state") == "revoked":
            print(
                f"{provider} had revoked this agreement before it was countersigned, so it is "
                "revoked on this node too: nothing can be shared under it",
                file=sys.stderr,
            )
            return POLICY
        print(f"delivered to {provider}: {result.get('provider_state')}")
    return 0


def _import(args: argparse.Namespace) -> int:
    result = invoke(args.home, "agreement.import", {"agreement_b64": _read(args.file)})
    print(_summary(result))
    return 0


def _list(args: argparse.Namespace) -> int:
    result = invoke(args.home, "agreement.list", {})
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    table = Table()
    table.add_column("id", no_wrap=True)
    for name in ("state", "provider", "consumer", "dataset", "modes", "valid until (UTC)"):
        table.add_column(name)
    for r in result["agreements"]:
        a = r["agreement"]
        table.add_row(
            a["id"],
            r["state"],
            a["provider"],
            a["consumer"],
            a["dataset"],
            ",".join(a["modes"]),
            _until(a),
        )
    # Agreement ids are long; give the table room rather than truncating them.
    Console(width=max(Console().width, 150)).print(table)
    return 0


def _show(args: argparse.Namespace) -> int:
    result = invoke(args.home, "agreement.show", {"id": args.id})
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    a = result["agreement"]
    purpose = a.get("purpose") or {}
    lines = [
        f"{a['id']}  [{result['state']}]",
        f"  {a['provider']} -> {a['consumer']}, dataset {a['dataset']}",
        f"  purpose   {purpose.get('code', '')}: {purpose.get('text', '')}",
        f"  modes     {', '.join(a['modes'])}",
        f"  valid     {utc_text(a['valid_from'])} to {utc_text(a['valid_until'])}",
        "  signed    by the provider"
        + (", countersigned by the consumer" if result.get("countersigned") else ""),
        f"  digest    {result['digest']}",
    ]
    if result["state"] == "expired":
        lines.append(f"  expired   {utc_text(a['valid_until'])}: nothing more is shared under it")
    if result.get("revoked_at") is not None:
        reason = result.get("reason") or ""
        if result.get("reason_erased_at") is not None:
            reason = f"(erased {utc_text(result['reason_erased_at'])})"
        lines.append(f"  revoked   {utc_text(result['revoked_at'])}: {reason}")
    lines.append("  columns")
    for name, spec in sorted(a["columns"].items()):
        params = ", ".join(f"{k}={v}" for k, v in sorted(spec.get("params", {}).items()))
        lines.append(f"    {name:<24} {spec['treatment']}{f' ({params})' if params else ''}")
    print("\n".join(lines))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    result = invoke(
        args.home,
        "agreement.revoke",
        {"id": args.id, "reason": args.reason, "notify": not args.no_notify},
    )
    print(_summary(result))
    if result.get("peer_holds_no_copy"):
        print(
            "the other party never countersigned it, so it holds no copy to revoke; if it "
            "countersigns now, its node learns the agreement is revoked"
        )
        return 0
    if result.get("peer_notified"):
        print("the other party was notified and revoked its copy")
    elif "peer_notified" in result:
        print(
            f"warning: the other party was not notified ({result.get('notice_error')}).\n"
            "The revocation holds on this node. Run the same command again to resend the "
            "notice.",
            file=sys.stderr,
        )
        # The other party can still serve or fetch under its copy: not a success.
        return PEER
    return 0

"""``fednode agreement``: draw up, countersign, import, list, show and revoke agreements."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ledger.canonical import dumps
from node.admin.client import invoke
from node.errors import AgreementError
from node.output_path import check_output
from node.timefmt import utc_text

__all__ = ["parse_column", "parse_time", "register"]

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
        AgreementError: none of these forms.
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
        raise AgreementError(
            f"cannot read time {text!r}",
            hint="use 2026-12-31, 2026-12-31T18:00, +90d or unix seconds",
        ) from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def parse_column(text: str) -> tuple[str, dict[str, Any]]:
    """Parse ``NAME=TREATMENT[:K=V[,K=V]]`` into a column name and treatment spec.

    Raises:
        AgreementError: the text does not have that shape.
    """
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise AgreementError(
            f"--column {text!r} is not NAME=TREATMENT[:PARAM=VALUE]",
            hint="e.g. --column age=generalize:band=10",
        )
    treatment, _, raw_params = rest.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, raw_params.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise AgreementError(f"--column {text!r}: parameter {item!r} is not KEY=VALUE")
        params[key] = int(value) if value.isdigit() else value
    return name, {"treatment": treatment, "params": params}


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
    create.add_argument("--consumer", required=True, help="the receiving department's id")
    create.add_argument("--dataset", required=True, help="catalog name of the dataset")
    create.add_argument("--purpose-code", required=True, help="short purpose code, e.g. STAT-7")
    create.add_argument("--purpose", default="", help="purpose in words")
    create.add_argument("--valid-from", default=None, help="start (default now)")
    create.add_argument(
        "--valid-until", required=True, help="end: 2026-12-31, +90d, or unix seconds"
    )
    create.add_argument(
        "--mode",
        action="append",
        required=True,
        choices=["transfer", "federated", "aggregate"],
        help="allowed use (repeatable)",
    )
    create.add_argument(
        "--column", action="append", required=True, metavar="NAME=TREATMENT", help="repeatable"
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
        "otherwise send the file back.\n\n"
        "example:\n  fednode agreement countersign visits.agreement --push",
    )
    cs.add_argument("file", type=Path, help="the provider-signed agreement file")
    cs.add_argument(
        "--out", type=Path, default=None, help="countersigned copy (default: overwrite FILE)"
    )
    cs.add_argument("--push", action="store_true", help="deliver it to the provider now")
    cs.set_defaults(handler=_countersign)

    imp = commands.add_parser(
        "import",
        help="activate a countersigned agreement (provider)",
        description="Verify both signatures and activate an agreement this node drew up.\n\n"
        "example:\n  fednode agreement import visits.agreement",
    )
    imp.add_argument("file", type=Path)
    imp.set_defaults(handler=_import)

    listing = commands.add_parser(
        "list",
        help="list agreements",
        description="List agreements.\n\nexample:\n  fednode agreement list",
    )
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)

    show = commands.add_parser(
        "show",
        help="show one agreement",
        description="Show an agreement.\n\nexample:\n  fednode agreement show agr-...",
    )
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print the stored record as JSON")
    show.set_defaults(handler=_show)

    revoke = commands.add_parser(
        "revoke",
        help="revoke an agreement now",
        description="Revoke an agreement on this node, effective immediately: new requests are\n"
        "refused and shares in flight stop at their next chunk. The node then sends the\n"
        "other party a signed notice, and its node revokes its copy too. If the other\n"
        "party cannot be reached, the revocation still holds here; the command says so.\n\n"
        "example:\n  fednode agreement revoke agr-... --reason 'purpose ended'",
    )
    revoke.add_argument("id")
    revoke.add_argument("--reason", default="revoked by operator")
    revoke.add_argument(
        "--no-notify", action="store_true", help="do not send the other party a notice"
    )
    revoke.set_defaults(handler=_revoke)


def _write(path: Path, result: dict[str, Any]) -> None:
    body = {
        k: result[k]
        for k in ("agreement", "provider_signature", "consumer_signature")
        if k in result
    }
    try:
        path.write_bytes(dumps(body))
    except OSError as e:
        raise AgreementError(f"cannot write agreement file {path}: {e.strerror}") from e


def _read(path: Path) -> str:
    try:
        return base64.b64encode(path.read_bytes()).decode()
    except OSError as e:
        raise AgreementError(f"cannot read agreement file {path}: {e.strerror}") from e


def _summary(result: dict[str, Any]) -> str:
    a = result["agreement"]
    return (
        f"{a['id']} [{result['state']}] {a['provider']} -> {a['consumer']} dataset {a['dataset']} "
        f"modes {','.join(a['modes'])} until "
        f"{dt.datetime.fromtimestamp(a['valid_until'], dt.UTC):%Y-%m-%d %H:%M} UTC"
    )


def _create(args: argparse.Namespace) -> int:
    columns = dict(parse_column(c) for c in args.column)
    # Before anything is signed; an agreement file is evidence, never replaced.
    check_output(args.out)
    result = invoke(
        args.home,
        "agreement.create",
        {
            "consumer": args.consumer,
            "dataset": args.dataset,
            "purpose_code": args.purpose_code,
            "purpose_text": args.purpose,
            "valid_from": None if args.valid_from is None else parse_time(args.valid_from),
            "valid_until": parse_time(args.valid_until),
            "modes": args.mode,
            "columns": columns,
        },
    )
    _write(args.out, result)
    print(_summary(result))
    print(f"signed agreement written to {args.out}; the consumer countersigns it next")
    return 0


def _countersign(args: argparse.Namespace) -> int:
    result = invoke(
        args.home, "agreement.countersign", {"agreement_b64": _read(args.file), "push": args.push}
    )
    out = args.out or args.file
    _write(out, result)
    print(_summary(result))
    print(f"countersigned copy written to {out}")
    if args.push:
        if result.get("pushed"):
            print(f"delivered to {result['agreement']['provider']}: {result.get('provider_state')}")
        else:
            print(
                f"could not deliver to the provider ({result.get('push_error')}); "
                f"send {out} instead"
            )
            return 5
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
            f"{dt.datetime.fromtimestamp(a['valid_until'], dt.UTC):%Y-%m-%d %H:%M}",
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
    if result.get("revoked_at") is not None:
        lines.append(f"  revoked   {utc_text(result['revoked_at'])}: {result.get('reason') or ''}")
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
    if result.get("peer_notified"):
        print("the other party was notified and revoked its copy")
    elif "peer_notified" in result:
        print(
            f"warning: the other party was not notified ({result.get('notice_error')}).\n"
            "The revocation holds on this node. Run the same command again to resend the "
            "notice.",
            file=sys.stderr,
        )
    return 0

"""The services' verbs: ``review`` (the QA workbench) and ``spc`` (quality over time)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .cli_station import wait_for_signal

log = logging.getLogger("inspector")


def _cmd_review(args) -> int:
    from . import logs
    from .review.config import load_review_config

    cfg = load_review_config(args.config)
    if args.add_user:
        from .review.users import add_user_command

        print(add_user_command(cfg.database, args.add_user, args.role, args.password_file))
        return 0
    from .review.app import serve

    logs.setup(cfg.logging.level, cfg.logging.format)
    print(f"review app on http://{cfg.server.host}:{cfg.server.port}/")
    serve(cfg)
    return 0


def _cmd_spc(args) -> int:
    import json

    from .spc import commands

    if args.what == "report":
        out = args.out or Path("spc-report")
        page = commands.run_report(args.config, args.db, args.t_from, args.t_to, out)
        print(f"wrote {page}")
        return 0
    if args.what == "bench" and args.faults:  # the service end to end under faults
        from .spc.bench import main as bench_main

        more = [] if args.out is None else ["--out", str(args.out)]
        return bench_main(["--faults", "--verdicts", str(min(args.verdicts, 100_000)), *more])
    if args.what == "bench":
        result = commands.run_bench(args.out, args.verdicts, args.quick)
        print(json.dumps(result["summary"], indent=2))
        if args.out:
            print(f"wrote {args.out}")
        return 0
    if not args.config:
        print("inspector spc: give --config spc.yaml", file=sys.stderr)
        return 2
    return commands.run_service(args.config, wait_for_signal)


def add_parsers(sub) -> None:
    """Add this group's verbs to the ``inspector`` parser."""
    rv = sub.add_parser("review", help="the QA workbench: review, relabel, train, compare, promote")
    rv.add_argument("--config", type=Path, required=True, help="review.yaml")
    rv.add_argument(
        "--add-user",
        metavar="NAME",
        help="add or update a user and exit (password: --password-file, INSPECTOR_REVIEW_PASSWORD, "
        "standard input, or asked twice at a terminal)",
    )
    rv.add_argument("--password-file", type=Path, help="--add-user: the password's file")
    rv.add_argument("--role", choices=["viewer", "reviewer", "admin"], default="reviewer")
    rv.set_defaults(func=_cmd_review)

    q = sub.add_parser(
        "spc",
        help="quality over time: SPC charts and alarms on the verdict stream (--config), "
        "report: an HTML page of charts, bench: the figures",
    )
    q.add_argument("what", nargs="?", choices=["run", "report", "bench"], default="run")
    q.add_argument("--config", type=Path, default=None, help="spc.yaml")
    q.add_argument("--db", default=None, help="report: SQLite file or postgresql:// URL")
    q.add_argument("--from", dest="t_from", default=None, help="report: ISO time or Unix s")
    q.add_argument("--to", dest="t_to", default=None, help="report: ISO time or Unix s")
    q.add_argument("--out", type=Path, default=None, help="report: folder; bench: JSON file")
    q.add_argument("--verdicts", type=int, default=1_000_000, help="bench: long-run size")
    q.add_argument("--quick", action="store_true", help="bench: fewer simulations")
    q.add_argument(
        "--faults",
        action="store_true",
        help="bench: the service end to end while the store and the broker fail "
        "(python -m inspector.spc.bench --faults has every setting)",
    )
    q.set_defaults(func=_cmd_spc)

"""``inspector VERB ...``: a thin dispatcher over the verbs, which live by group beside it
(cli_check, cli_station, cli_lab, cli_services; the offline verbs in training/).

User mistakes reach the user as one line per problem and a non-zero exit code (2 for
configuration and model problems); programming errors keep their traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__, cli_check, cli_lab, cli_services, cli_station
from .errors import InspectorError

log = logging.getLogger("inspector")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inspector",
        description="Defect Inspector: line-side "
        "visual defect inspection with a fail-safe MQTT verdict per part.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    cli_check.add_parsers(sub)
    cli_station.add_parsers(sub)
    bench = cli_lab.add_parsers(sub)
    _training_parsers(sub, bench)
    cli_services.add_parsers(sub)
    from . import cameracli  # inspector camera list|features|grab

    cameracli.add_parser(sub)
    return p


def _training_parsers(sub, bench) -> None:
    """The offline verbs (dataset, train, export, evaluate) live with training/.

    The runtime never imports training/ (DESIGN.md); only this dispatcher does, and the
    verbs import TensorFlow when they run. A line PC installed without training/ simply
    lacks these verbs.
    """
    try:
        from training.cli import add_bench_accuracy_args, add_parsers
    except ImportError:
        return
    add_parsers(sub)
    add_bench_accuracy_args(bench)
    from training.cli import extend  # the benches' own arguments (bench anomaly)

    extend(sub, bench)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.verb not in ("run", "gate"):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except InspectorError as exc:
        for line in exc.problems:
            print(f"inspector {args.verb}: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

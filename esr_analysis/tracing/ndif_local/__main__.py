"""``python -m esr_analysis.tracing.ndif_local venv|up|down|status``: build the server environment, start the
machine's default local NDIF (state in :func:`~esr_analysis.tracing.ndif_local.instance.stack_run_dir`),
stop it, or say whether it runs. ``... test -- <pytest args>`` is the ndif step of ``make test``
(:func:`~esr_analysis.tracing.ndif_local.check.run_ndif_tests`)."""

from __future__ import annotations

import argparse
import sys

from esr_analysis.tracing.ndif_local.env import (
    NdifUnavailable,
    build_venv,
    venv_dir,
    venv_ready,
    why_unavailable,
)
from esr_analysis.tracing.ndif_local.instance import LocalNdif, stack_run_dir
from esr_analysis.tracing.ndif_local.models import served_models


def ndif_local_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["test"]:
        from esr_analysis.tracing.ndif_local.check import run_ndif_tests

        rest = argv[1:]
        return run_ndif_tests(rest[1:] if rest[:1] == ["--"] else rest)
    parser = argparse.ArgumentParser(prog="python -m esr_analysis.tracing.ndif_local")
    parser.add_argument("command", choices=["venv", "up", "down", "status", "test"])
    parser.add_argument("--no-embedded", action="store_true", help="serve only the tiny model")
    args = parser.parse_args(argv)
    run_dir = stack_run_dir()
    current = LocalNdif.from_state(run_dir)
    try:
        if args.command == "venv":
            reason = why_unavailable()
            if reason and not venv_ready():
                print(f"local NDIF unavailable: {reason}; the ndif tests will not run", file=sys.stderr)
                return 0
            print(build_venv())
        elif args.command == "up":
            if current is not None and current.alive():
                print(f"local NDIF already running at {current.url}")
                return 0
            if current is not None:
                current.stop()
            inst = LocalNdif(run_dir, served_models(embedded=not args.no_embedded)).start()
            inst.detach()  # the stack stays up after this command; `down` stops it
            print(f"local NDIF up at {inst.url} serving {', '.join(inst.models)}; logs in {inst.logs}")
            print(f"export NDIF_HOST={inst.url}")
        elif args.command == "down":
            if current is None:
                print("no local NDIF recorded")
            else:
                current.stop()
                print("local NDIF stopped; no process and no port left")
        else:
            if current is None or not current.alive():
                print(f"local NDIF: not running (server environment {'ready' if venv_ready() else 'not built'} "
                      f"at {venv_dir()})")
                return 1
            print(f"local NDIF running at {current.url}: {len(current.alive())} processes, models "
                  f"{', '.join(current.models)}")
    except NdifUnavailable as exc:
        print(f"local NDIF unavailable: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(ndif_local_main())

"""``tfclassify models``: list the served models, describe one, or show version states."""

from __future__ import annotations

import argparse
import dataclasses
import json

from tfclassify.client.cli.arguments import add_server_arguments, client_from


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "models",
        help="list served models or describe one",
        description="Without a name, list the models the server serves; with one, print its metadata as JSON.",
    )
    add_server_arguments(parser)
    parser.add_argument("name", nargs="?", help="describe this model")
    parser.add_argument("--version", type=int, help="with a name: describe this version")
    parser.add_argument("--status", action="store_true", help="list every version's state (LOADING, AVAILABLE, FAILED ...)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        if args.status:
            if args.name:
                _print_status(client.get_model_status(args.name), ())
            else:
                repository = client.get_repository_status()
                _print_status(repository.versions, repository.ignored_folders)
            return 0
        if args.name:
            info = client.get_model_metadata(args.name, version=args.version)
            print(json.dumps(dataclasses.asdict(info), indent=2, ensure_ascii=False))
            return 0
        models = client.list_models()
    print(f"{'MODEL':<20} {'VERSION':>7} {'VERSIONS':<12} {'INPUT':<20} {'CLASSES':>7} {'ARCH':<15} "
          f"{'ACCURACY':>8}  {'RUNTIME':<8} DEVICE")
    for m in models:
        # From the version's model card (tfclassify.json); '-' for models trained elsewhere.
        arch = m.training_metadata.get("architecture") or "-"
        print(
            f"{m.name:<20} {m.version:>7} {','.join(map(str, m.versions)):<12} "
            f"{m.input_dtype + str(list(m.input_shape)):<20} {m.num_classes:>7} {arch:<15} "
            f"{_accuracy(m.training_metadata.get('test_accuracy')):>8}  {m.runtime:<8} {m.device}"
        )
    return 0


def _accuracy(value: object) -> str:
    """A card's test accuracy with 4 decimals, as every report prints accuracy (the card keeps 6, and a card
    written elsewhere may hold anything); '-' when there is none."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _print_status(statuses, ignored) -> None:
    print(f"{'MODEL':<20} {'VERSION':>7} {'STATE':<10} {'LABELS':<14} {'LOAD S':>6}  DEVICES / ERROR")
    for s in statuses:
        detail = s.error or ",".join(s.devices)
        print(f"{s.name:<20} {s.version:>7} {s.state:<10} {','.join(s.labels) or '-':<14} {s.load_seconds:>6.2f}  {detail}")
    for name, reason in ignored:
        print(f"{name:<20} {'-':>7} {'IGNORED':<10} {'-':<14} {'-':>6}  {reason}")

"""``trio-sync token``: sign a token that lets one client sync one store."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..protocol import issue_token
from ._args import client_id, lifetime, read_secrets, store_id


def add_parser(commands: Any) -> None:
    token = commands.add_parser(
        "token",
        help="sign a token that lets one client sync one store",
        description="Prints a token for open_client(..., token=...). Secrets are never "
        "printed; the token itself is a credential: treat it like a password.",
    )
    token.add_argument("--secret-file", required=True, help="the server's secret file")
    token.add_argument("--store", required=True, type=store_id, help="the store id")
    token.add_argument("--client", required=True, type=client_id, help="the client id")
    token.add_argument(
        "--ttl", type=lifetime, default=30 * 24 * 3600, help="seconds it is valid (30 days)"
    )

    token.set_defaults(run=run_token)


def run_token(args: argparse.Namespace) -> int:
    secret = read_secrets(args.secret_file)[0]
    print(
        issue_token(
            secret,
            store_id=args.store,
            client_id=args.client,
            expires_at=time.time() + args.ttl,
        )
    )
    return 0

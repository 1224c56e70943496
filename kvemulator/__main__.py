"""Standalone emulator for ``func start`` work without an Azure subscription.

A developer runs ``python -m kvemulator --seed standard`` next to the
Functions host and copies the printed settings into ``local.settings.json``;
the app then talks to this process exactly as it would to Azure (HTTPS,
challenge auth, real SDK). The CA is kept in the state directory and reused
across restarts so the path (and trust) in ``local.settings.json`` stays
valid. Secret values are never printed; secrets live in memory only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import trustme

from kvemulator.emulator import KeyVaultEmulator
from kvemulator.seed import seed_standard, standard_inventory
from kvemulator.store import NAME_RE

_VAULT_NAME_RE = NAME_RE


def _load_or_create_ca(state_dir: Path) -> trustme.CA:
    cert_path = state_dir / "ca.pem"
    key_path = state_dir / "ca-key.pem"
    if cert_path.is_file() and key_path.is_file():
        try:
            return trustme.CA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
        except ValueError:
            pass  # unreadable leftovers: make a new CA below
    ca = trustme.CA(organization_name="kvemulator local CA")
    state_dir.mkdir(parents=True, exist_ok=True)
    ca.cert_pem.write_to_path(str(cert_path))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(ca.private_key_pem.bytes())
    return ca


def settings_for(emu: KeyVaultEmulator, vault_name: str) -> dict[str, str]:
    """The app settings that point the Functions app at ``emu``."""
    return {
        "ROTATION_VAULT_URLS": f"{vault_name}={emu.url}",
        "ROTATION_VAULT_CA_BUNDLE": emu.ca_path,
        "ROTATION_VAULT_VERIFY_CHALLENGE_RESOURCE": "false",
        "ROTATION_VAULT_CREDENTIAL": "emulator",
        "ROTATION_ALLOWED_VAULTS": vault_name,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kvemulator", description="Local Azure Key Vault (secrets) emulator"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8443, help="port to listen on; 0 picks a free one (default 8443)")
    parser.add_argument("--seed", choices=("none", "standard"), default="none", help="initial inventory")
    parser.add_argument(
        "--near-expiry",
        action="append",
        metavar="NAME",
        help="seed NAME to expire in 10 days (repeatable; default jwt-signing-key)",
    )
    parser.add_argument("--no-near-expiry", action="store_true", help="seed nothing close to expiry")
    parser.add_argument("--state-dir", default=".emulator", help="where the CA is kept (default .emulator)")
    parser.add_argument("--vault-name", default="kv-local", help="vault name used in the printed settings")
    parser.add_argument("--log-requests", action="store_true", help="log each request (never bodies) to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not _VAULT_NAME_RE.fullmatch(args.vault_name):
        print("--vault-name must be letters, digits and dashes", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.log_requests else logging.WARNING, format="%(message)s")
    if not args.log_requests:
        logging.getLogger("kvemulator.access").setLevel(logging.WARNING)

    state_dir = Path(args.state_dir).resolve()
    ca = _load_or_create_ca(state_dir)
    emu = KeyVaultEmulator(
        host=args.host, port=args.port, ca=ca, ca_path=state_dir / "ca.pem", vault_name=args.vault_name
    )

    near_expiry: tuple[str, ...] = ()
    if not args.no_near_expiry:
        near_expiry = tuple(args.near_expiry or ("jwt-signing-key",))
    if args.seed == "standard":
        known = {spec.name for spec in standard_inventory()}
        unknown = [name for name in near_expiry if name not in known]
        if unknown:
            print(f"--near-expiry: not in the standard inventory: {', '.join(unknown)}", file=sys.stderr)
            return 2

    # Seed before listening, so whoever waits for the port finds a full vault.
    seeded: dict[str, str] = {}
    if args.seed == "standard":
        seeded = seed_standard(emu, near_expiry=near_expiry)
    try:
        emu.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        settings = settings_for(emu, args.vault_name)
        (state_dir / "settings.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

        print(f"Key Vault emulator for vault {args.vault_name!r} listening on {emu.url}")
        print(f"CA certificate: {emu.ca_path}")
        if seeded:
            soon = ", ".join(near_expiry) if near_expiry else "none"
            print(f"Seeded {len(seeded)} secrets (values not shown); expiring within 10 days: {soon}")
        print('Add to the "Values" of local.settings.json:')
        for key, value in settings.items():
            print(f"  {key}={value}")
        print(json.dumps(settings, indent=2))
        print("Ready. Ctrl+C to stop.", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Enrol a device, or add a service user to the broker's password file, and print the settings it needs.

    python docker/mosquitto/add_device.py vehicle_01 --broker-host localhost
    python docker/mosquitto/add_device.py collector

A device is its client certificate (make_dev_certs.py, or your CA): on the TLS listener the broker takes
the user name AND the client id from the certificate's CN (mosquitto.secure.conf), so the ACL lets
`vehicle_01` publish only to device/data/vehicle_01, vehicle/speed/vehicle_01 and device/status/vehicle_01,
and it cannot take over any other client's session. A device gets no password, so it cannot log in on the
services' plain listener either; a password left from an earlier setup is removed. Only for the optional
WebSockets listener, where no certificate arrives, give one with --password-login.

The service users `collector`, `telegraf` and `dashboard` get a password (generated unless --password)
and the read rights the ACL gives them. The password goes to `mosquitto_passwd` on its standard input,
never on a command line. The running broker rereads the file on SIGHUP (DEPLOYMENT.md).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rtds.broker import install_hint
from rtds.schema import DEVICE_ID_PATTERN

CONFIG_DIR = Path(__file__).resolve().parent / "config"
DEFAULT_PASSWORD_FILE = CONFIG_DIR / "passwd"
DEFAULT_CERTS_DIR = CONFIG_DIR / "certs"
# The ACL's service users; a device may not take one of these names.
SERVICE_USERS = ("collector", "telegraf", "dashboard")
PASSWORD_FILE_MODE = 0o640
GENERATED_PASSWORD_BYTES = 24
DOCKER_IMAGE = "eclipse-mosquitto:2.0.22"


def generate_password() -> str:
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


def check_name(name: str) -> None:
    if not DEVICE_ID_PATTERN.fullmatch(name):
        raise SystemExit(f"{name!r} is not a valid id; use 1-64 letters, digits, '_', '.' or '-' (e.g. vehicle_01)")


def mosquitto_passwd_command(password_file: Path) -> list[str]:
    """The mosquitto_passwd command line for `password_file`: installed, or from the broker's image."""
    for candidate in ("mosquitto_passwd", "/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd"):
        path = shutil.which(candidate)
        if path:
            return [path, str(password_file)]
    if shutil.which("docker"):
        # On a server, installing the mosquitto package would also start a second broker on 1883.
        folder = password_file.resolve().parent
        return [
            "docker",
            "run",
            "--rm",
            "-i",
            "-v",
            f"{folder}:/c",
            DOCKER_IMAGE,
            "mosquitto_passwd",
            f"/c/{password_file.name}",
        ]
    raise SystemExit(
        f"neither mosquitto_passwd nor docker is installed; install Mosquitto's tools with: {install_hint()}"
    )


def set_password(password_file: Path, user: str, password: str) -> None:
    """Add or replace `user` in `password_file`, keeping the file's mode and group (mosquitto must read it)."""
    if not password_file.exists():
        password_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PASSWORD_FILE_MODE)
        os.close(fd)
    before = password_file.stat()
    # Without -b, mosquitto_passwd reads the password (twice) from standard input.
    result = subprocess.run(
        [*mosquitto_passwd_command(password_file), user],
        input=f"{password}\n{password}\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(
            f"mosquitto_passwd failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
        )
    after = password_file.stat()
    if (after.st_mode, after.st_gid) != (before.st_mode, before.st_gid):
        os.chmod(password_file, before.st_mode & 0o7777)
        try:
            os.chown(password_file, -1, before.st_gid)
        except PermissionError:
            print(f"note: could not give {password_file} back its group {before.st_gid}", file=sys.stderr)


def remove_password(password_file: Path, user: str) -> bool:
    """Delete `user` from `password_file` if it is there; True when it was."""
    if not password_file.exists() or not any(
        line.split(":", 1)[0] == user for line in password_file.read_text().splitlines()
    ):
        return False
    *tool, file_argument = mosquitto_passwd_command(password_file)
    result = subprocess.run(
        [*tool, "-D", file_argument, user],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"mosquitto_passwd -D failed: {result.stderr.strip() or result.stdout.strip()}")
    return True


def device_env(name: str, password: str | None, host: str, port: int, certs_dir: Path) -> list[str]:
    client_cert = certs_dir / "clients" / f"{name}.crt"
    lines = [
        f"# .env for device {name}. Its identity is its certificate: keep the .key file private.",
        f"MQTT_BROKER_HOST={host}",
        f"MQTT_BROKER_PORT={port}",
        "MQTT_USE_TLS=true",
        "MQTT_TLS_INSECURE=false",
        f"MQTT_CA_CERTS={relative(certs_dir / 'ca.crt')}",
        f"MQTT_CERTFILE={relative(client_cert)}",
        f"MQTT_KEYFILE={relative(client_cert.with_suffix('.key'))}",
        "# The TLS listener takes the user name and client id from the certificate (CN); the user name here",
        "# only tells our tools (rtds check mqtt) which topics are the device's own.",
        f"MQTT_USERNAME={name}",
    ]
    if password is not None:
        lines += ["# For the WebSockets listener only, where no certificate arrives:", f"MQTT_PASSWORD={password}"]
    if not client_cert.exists():
        lines.append(
            f"# {relative(client_cert)} does not exist yet: run python docker/mosquitto/make_dev_certs.py {name}"
        )
    return lines


def service_env(name: str, password: str, host: str, port: int) -> list[str]:
    if name == "telegraf":
        return [
            "# Lines for docker/.env (docker-compose.with-telegraf.yml passes them to Telegraf):",
            "TELEGRAF_MQTT_USERNAME=telegraf",
            f"TELEGRAF_MQTT_PASSWORD={password}",
        ]
    return [
        f"# Lines for /etc/rtds/{name}.env (the {name}'s systemd unit reads it; chmod 600):",
        f"MQTT_BROKER_HOST={host}",
        f"MQTT_BROKER_PORT={port}",
        "MQTT_USE_TLS=false",
        f"MQTT_USERNAME={name}",
        f"MQTT_PASSWORD={password}",
    ]


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Add a device or service user to the Mosquitto password file.")
    parser.add_argument("name", help=f"device id (e.g. vehicle_01) or one of: {', '.join(SERVICE_USERS)}")
    parser.add_argument("--password", help="a service user's password (default: a new random one; prefer the default)")
    parser.add_argument(
        "--password-login",
        action="store_true",
        help="also give a DEVICE a password, for the optional WebSockets listener only (no certificate arrives there)",
    )
    parser.add_argument("--password-file", type=Path, default=DEFAULT_PASSWORD_FILE, help="Mosquitto password file")
    parser.add_argument("--certs-dir", type=Path, default=DEFAULT_CERTS_DIR, help="where make_dev_certs.py wrote")
    parser.add_argument(
        "--broker-host",
        help="broker host to print (devices: localhost, i.e. `cloudflared access tcp` on the device; services: 127.0.0.1)",
    )
    parser.add_argument("--broker-port", type=int, help="broker port to print (devices: 8883 TLS; services: 1883)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_name(args.name)
    if args.name in SERVICE_USERS:
        password = args.password or generate_password()
        set_password(args.password_file, args.name, password)
        print(f"added {args.name!r} to {relative(args.password_file)}", file=sys.stderr)
        lines = service_env(args.name, password, args.broker_host or "127.0.0.1", args.broker_port or 1883)
    else:
        device_password = None
        if args.password_login:
            device_password = args.password or generate_password()
            set_password(args.password_file, args.name, device_password)
            print(f"added {args.name!r} to {relative(args.password_file)} (WebSockets only)", file=sys.stderr)
        elif args.password:
            raise SystemExit(
                f"{args.name!r} is a device: it logs in with its certificate, not a password. Leave out --password "
                "(or add --password-login for the WebSockets listener)."
            )
        elif remove_password(args.password_file, args.name):
            print(
                f"removed {args.name!r}'s password from {relative(args.password_file)}: a device logs in with its "
                "certificate",
                file=sys.stderr,
            )
        host, port = args.broker_host or "localhost", args.broker_port or 8883
        lines = device_env(args.name, device_password, host, port, args.certs_dir)
    print("\n".join(lines))
    print(
        "\nA running broker rereads the password file on SIGHUP: docker compose kill -s SIGHUP mosquitto",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

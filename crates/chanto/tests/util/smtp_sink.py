"""A real SMTP server on loopback for chanto's email tests (aiosmtpd).

Usage: smtp_sink.py OUT_DIR USER PASSWORD
Requires AUTH (LOGIN/PLAIN) with USER/PASSWORD, writes each accepted message to OUT_DIR/NNNN.eml with its envelope
in NNNN.json, prints the port it listens on, and stops when standard input closes.
"""
import asyncio
import json
import os
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

out, user, password = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".eml")])
        base = os.path.join(out, f"{n:04}")
        with open(base + ".json.tmp", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                       "authenticated": bool(session.authenticated)}, f)
        os.rename(base + ".json.tmp", base + ".json")
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 Message accepted for delivery"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == user and auth_data.password == password
    return AuthResult(success=ok, handled=False)


async def main():
    loop = asyncio.get_running_loop()
    # Port 0, read back from the listening socket: no reserve-release-rebind race.
    server = await loop.create_server(
        lambda: SMTP(Handler(), hostname="127.0.0.1", authenticator=authenticate,
                     auth_require_tls=False, auth_required=True),
        host="127.0.0.1", port=0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()
    await server.wait_closed()


asyncio.run(main())

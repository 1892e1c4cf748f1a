"""One SCRAM-SHA-256 exchange over a Dovecot auth-client socket, with scramp as the client.

Usage: dovecot_scram.py SOCKET USER PASSWORD
Prints "OK user=NAME, server signature verified" or the server's FAIL line; exits 0 in both
cases (the caller judges), non-zero when the protocol itself goes wrong.
"""
import base64
import os
import socket
import sys

from scramp import ScramClient

path, user, password = sys.argv[1:4]
sock = socket.socket(socket.AF_UNIX)
sock.settimeout(10)
sock.connect(path)
reader = sock.makefile("rb")


def line():
    text = reader.readline().decode()
    if not text.endswith("\n"):
        sys.exit("connection closed")
    return text[:-1]


def b64(text):
    return base64.b64encode(text.encode()).decode()


sock.sendall(b"VERSION\t1\t0\nCPID\t%d\n" % os.getpid())
mechanisms = []
while True:
    got = line()
    if got.startswith("MECH\t"):
        mechanisms.append(got.split("\t")[1])
    if got == "DONE":
        break
if "SCRAM-SHA-256" not in mechanisms:
    sys.exit("SCRAM-SHA-256 not offered: %r" % mechanisms)

client = ScramClient(["SCRAM-SHA-256"], user, password)
sock.sendall(
    ("AUTH\t1\tSCRAM-SHA-256\tservice=smtp\tresp=%s\n" % b64(client.get_client_first())).encode()
)
got = line().split("\t")
if got[:2] != ["CONT", "1"]:
    sys.exit("expected CONT, got %r" % got)
client.set_server_first(base64.b64decode(got[2]).decode())
sock.sendall(("CONT\t1\t%s\n" % b64(client.get_client_final())).encode())
got = line().split("\t")
if got[:2] == ["OK", "1"]:
    params = dict(p.split("=", 1) for p in got[2:] if "=" in p)
    client.set_server_final(base64.b64decode(params["resp"]).decode())
    print("OK user=%s, server signature verified" % params.get("user"))
else:
    print("\t".join(got))

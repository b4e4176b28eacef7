"""A small after-queue SMTP content filter for the tests (FILTER_README's "advanced"
set-up): it receives mail from the suite's smtp client, adds `X-Filtered: smtp-filter`,
and re-injects it over SMTP to the suite's second smtpd before answering the end of
data (250 once re-injected, 451 otherwise). Usage: smtp_filter.py LISTEN_PORT REINJECT_PORT."""

import smtplib
import socket
import sys
import threading


def serve(conn, reinject_port):
    f = conn.makefile("rb")
    out = lambda line: conn.sendall(line.encode() + b"\r\n")
    out("220 filter ESMTP")
    sender, rcpts = None, []
    while True:
        line = f.readline(4096)
        if not line:
            return
        cmd = line.decode("latin-1").rstrip("\r\n")
        verb = cmd[:4].upper()
        if verb in ("EHLO", "HELO", "LHLO"):
            out("250-filter\r\n250-8BITMIME\r\n250 PIPELINING" if verb != "HELO" else "250 filter")
        elif verb == "MAIL":
            sender, rcpts = cmd.split(":", 1)[1].strip().split()[0].strip("<>"), []
            out("250 2.1.0 Ok")
        elif verb == "RCPT":
            rcpts.append(cmd.split(":", 1)[1].strip().split()[0].strip("<>"))
            out("250 2.1.5 Ok")
        elif verb == "DATA":
            out("354 go ahead")
            data = []
            while True:
                l = f.readline(1 << 20)
                if not l or l in (b".\r\n", b".\n"):
                    break
                data.append(l[1:] if l.startswith(b"..") else l)
            msg = b"X-Filtered: smtp-filter\r\n" + b"".join(data)
            try:
                with smtplib.SMTP("127.0.0.1", reinject_port, timeout=20) as c:
                    c.sendmail(sender, rcpts, msg)
                out("250 2.0.0 Ok: re-injected")
            except Exception as e:  # noqa: BLE001 - any failure is a temporary one
                out(f"451 4.3.0 re-injection failed: {e}")
        elif verb == "RSET":
            sender, rcpts = None, []
            out("250 Ok")
        elif verb == "QUIT":
            out("221 Bye")
            return
        else:
            out("250 Ok")


def main():
    listen, reinject = int(sys.argv[1]), int(sys.argv[2])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", listen))
    s.listen(8)
    print("ready", flush=True)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=lambda c=conn: (serve(c, reinject), c.close()), daemon=True).start()


if __name__ == "__main__":
    main()

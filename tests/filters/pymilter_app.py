"""A milter written for the tests with Debian's python3-milter (run it with
/usr/bin/python3). Usage: pymilter_app.py PORT. What it does is chosen by the Subject:

  reject      -> REJECT at end of message
  tempfail    -> TEMPFAIL
  discard     -> DISCARD
  replycode   -> setreply 554 5.7.0 "custom milter reply", REJECT
  quarantine  -> quarantine("test quarantine"), ACCEPT
  modify      -> insert/add/change/delete headers, replace the body, add a recipient
                 (other@localhost), change the sender (changed@example.org)
  delrcpt     -> delete the recipient other@localhost
  stall       -> sleep 30 s at end of message
A recipient starting with `milterreject` is rejected at RCPT. Every accepted message gets
`X-Test-Macros:` with the macros it saw.

Per SMTP stage (issue 11): `pymilter_app.py PORT [RECORD [CONNECT]]` appends one JSON line
per event to RECORD ({"stage": ..., "macros": {...}}) and answers CONNECT with CONNECT
(reject, tempfail, replycode, accept; default continue). A HELO name, a sender's or a
recipient's local part starting with `reject`, `tempfail`, `replycode` or `discard`
(HELO: `helo-reject`...; MAIL: `mail-reject`...; RCPT: `rcpt-reject`...) gets that answer
at that stage; `replycode` is 553 5.7.2 "<stage> refused by milter". HELO `helo-stall...`
sleeps 8 s before it continues."""

import json
import sys
import time

import Milter


class TestMilter(Milter.Base):
    def __init__(self):
        self.macros = {}
        self.subject = ""
        self.rcpts = []
        self.helo = None
        self.hostname = None
        self.sender = None

    def note(self, *names):
        for n in names:
            v = self.getsymval(n)
            if v is not None:
                self.macros[n] = v

    def record(self, stage, args=()):
        """Appends what this event brought (all macros it may carry) to RECORD."""
        if not RECORD:
            return
        seen = {}
        for n in ALL_MACROS:
            v = self.getsymval(n)
            if v is not None:
                seen[n] = v
        with open(RECORD, "a") as f:
            f.write(json.dumps({"stage": stage, "args": list(args), "macros": seen}) + "\n")

    def answer(self, stage, what):
        """The answer for a stage-specific word (reject, tempfail, replycode, discard)."""
        if what.startswith("reject"):
            return Milter.REJECT
        if what.startswith("tempfail"):
            return Milter.TEMPFAIL
        if what.startswith("replycode"):
            self.setreply("553", "5.7.2", f"{stage} refused by milter")
            return Milter.REJECT
        if what.startswith("discard"):
            return Milter.DISCARD
        if what.startswith("accept"):
            return Milter.ACCEPT
        return Milter.CONTINUE

    def connect(self, hostname, family, hostaddr):
        self.note("j", "_", "{daemon_name}", "v", "{client_addr}", "{client_name}")
        self.hostname = hostname
        self.record("connect", [hostname])
        return self.answer("connect", CONNECT)

    def hello(self, name):
        self.helo = name
        self.record("helo", [name])
        if name.startswith("helo-stall"):
            time.sleep(8)
            return Milter.CONTINUE
        return self.answer("helo", name[len("helo-"):] if name.startswith("helo-") else "")

    def envfrom(self, f, *args):
        self.note("i", "{mail_addr}", "{auth_authen}")
        self.sender = f
        self.record("mail", [f, *args])
        local = f.strip("<>").split("@")[0]
        return self.answer("sender", local[len("mail-"):] if local.startswith("mail-") else "")

    def envrcpt(self, to, *args):
        self.note("{rcpt_addr}")
        self.record("rcpt", [to, *args])
        if to.strip("<>").startswith("milterreject"):
            self.setreply("550", "5.7.1", "recipient refused by milter")
            return Milter.REJECT
        local = to.strip("<>").split("@")[0]
        a = self.answer("recipient", local[len("rcpt-"):] if local.startswith("rcpt-") else "")
        if a == Milter.CONTINUE:
            self.rcpts.append(to)
        return a

    def data(self):
        self.record("data")
        return Milter.CONTINUE

    def unknown(self, cmd):
        self.record("unknown", [cmd if isinstance(cmd, str) else cmd.decode("latin-1")])
        return self.answer("command", "replycode" if "REFUSEME" in str(cmd) else "")

    def eoh(self):
        self.record("eoh")
        return Milter.CONTINUE

    def abort(self):
        self.record("abort")
        return Milter.CONTINUE

    def header(self, name, value):
        if name.lower() == "subject":
            self.subject = value
        return Milter.CONTINUE

    def eom(self):
        s = self.subject
        if "stall" in s:
            time.sleep(30)
            return Milter.ACCEPT
        if "tempfail" in s:
            return Milter.TEMPFAIL
        if "replycode" in s:
            self.setreply("554", "5.7.0", "custom milter reply")
            return Milter.REJECT
        if "reject" in s:
            return Milter.REJECT
        if "discard" in s:
            return Milter.DISCARD
        if "quarantine" in s:
            self.quarantine("test quarantine")
            return Milter.ACCEPT
        if "modify" in s:
            self.addheader("X-Milter-First", "inserted at the top", 0)
            self.addheader("X-Milter-Added", "appended")
            self.chgheader("Subject", 1, "modified by milter")
            self.chgheader("X-Remove-Me", 1, "")
            self.replacebody(b"body replaced by the milter\r\n")
            self.addrcpt("<other@localhost>")
            self.chgfrom("<changed@example.org>")
        if "delrcpt" in s:
            self.delrcpt("<other@localhost>")
        self.record("eom")
        seen = " ".join(f"{k}={v}" for k, v in sorted(self.macros.items()))
        self.addheader("X-Test-Macros", seen)
        self.addheader("X-Test-Connect", f"host={self.hostname} helo={self.helo} from={self.sender}")
        return Milter.ACCEPT


ALL_MACROS = ["j", "_", "v", "i", "{daemon_name}", "{daemon_addr}", "{client_addr}", "{client_name}",
              "{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}",
              "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}", "{mail_host}",
              "{mail_mailer}", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"]
RECORD = sys.argv[2] if len(sys.argv) > 2 else ""
CONNECT = sys.argv[3] if len(sys.argv) > 3 else ""


def main():
    port = int(sys.argv[1])
    Milter.factory = TestMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGBODY | Milter.ADDRCPT | Milter.DELRCPT
                     | Milter.CHGHDRS | Milter.QUARANTINE | Milter.CHGFROM)
    print("ready", flush=True)
    Milter.runmilter("oxipost-test", f"inet:{port}@127.0.0.1", 240)


if __name__ == "__main__":
    main()

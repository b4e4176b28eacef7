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
`X-Test-Macros:` with the macros it saw."""

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

    def connect(self, hostname, family, hostaddr):
        self.note("j", "_", "{daemon_name}", "v", "{client_addr}", "{client_name}")
        self.hostname = hostname
        return Milter.CONTINUE

    def hello(self, name):
        self.helo = name
        return Milter.CONTINUE

    def envfrom(self, f, *args):
        self.note("i", "{mail_addr}", "{auth_authen}")
        self.sender = f
        return Milter.CONTINUE

    def envrcpt(self, to, *args):
        self.note("{rcpt_addr}")
        if to.strip("<>").startswith("milterreject"):
            self.setreply("550", "5.7.1", "recipient refused by milter")
            return Milter.REJECT
        self.rcpts.append(to)
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
        seen = " ".join(f"{k}={v}" for k, v in sorted(self.macros.items()))
        self.addheader("X-Test-Macros", seen)
        self.addheader("X-Test-Connect", f"host={self.hostname} helo={self.helo} from={self.sender}")
        return Milter.ACCEPT


def main():
    port = int(sys.argv[1])
    Milter.factory = TestMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGBODY | Milter.ADDRCPT | Milter.DELRCPT
                     | Milter.CHGHDRS | Milter.QUARANTINE | Milter.CHGFROM)
    print("ready", flush=True)
    Milter.runmilter("oxipost-test", f"inet:{port}@127.0.0.1", 240)


if __name__ == "__main__":
    main()

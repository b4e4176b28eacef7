"""Issue 6: MIME-aware content checks in cleanup, through smtpd: mime_header_checks (MIME
headers and MIME part headers) and nested_header_checks (headers of attached messages)
default to $header_checks as in Postfix; body_checks see every part's body lines but no
MIME or nested header; disable_mime_input_processing turns the parsing off."""

import smtplib

from conftest import Client, base_config, reconfigure, write_file

LOCAL = "demo@mx.example.test"

HEADER_CHECKS = """\
/^Subject: forbidden/ REJECT forbidden subject
/^Content-(Disposition|Type):.*name="?[^"]*\\.exe/ REJECT 5.7.1 no executables
"""

BODY_CHECKS = """\
/^Content-Disposition/ REJECT body_checks saw a MIME header
/^Subject: forbidden/ REJECT body_checks saw a nested header
/^EICAR-LIKE/ REJECT 5.7.1 bad body line
"""


def message(part_headers, part_body=b"hello\r\n"):
    return (
        b"From: a@example.org\r\nTo: demo@mx.example.test\r\nSubject: a report\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"=_outer\"\r\n\r\n"
        b"This is a MIME message.\r\n--=_outer\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--=_outer\r\n" + part_headers + b"\r\n" + part_body + b"--=_outer--\r\n"
    )


NESTED = message(b"Content-Type: message/rfc822\r\n",
                 b"From: b@example.org\r\nSubject: forbidden words\r\n\r\ninner text\r\n")
EXE = message(b"Content-Type: application/octet-stream\r\n"
              b"Content-Disposition: attachment; filename=\"setup.exe\"\r\n",
              b"TVqQAAMAAAAEAAAA\r\n")
BAD_BODY = message(b"Content-Type: text/plain\r\n", b"EICAR-LIKE line in a part\r\n")


def send(s, body):
    c = Client(s)
    assert c.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    try:
        return c.data(body)
    except smtplib.SMTPDataError as e:
        return f"{e.smtp_code} {e.smtp_error.decode()}"
    finally:
        c.close()


def test_mime_nested_and_body_checks(suite, dns):
    h = write_file(suite, "header_checks", HEADER_CHECKS)
    b = write_file(suite, "body_checks", BODY_CHECKS)
    base_config(suite, dns, f"header_checks=regexp:{h}", f"body_checks=regexp:{b}")
    suite.start()
    # Defaults: the header_checks patterns apply to MIME part headers and nested headers;
    # body_checks never see those headers, but see the body lines of every part.
    assert send(suite, NESTED) == "550 5.7.1 forbidden subject"
    assert send(suite, EXE) == "550 5.7.1 no executables"
    assert send(suite, BAD_BODY) == "550 5.7.1 bad body line"
    log = suite.log()
    assert "reject: header Subject: forbidden words" in log
    assert "reject: header Content-Disposition: attachment; filename=\"setup.exe\"" in log
    assert "body_checks saw" not in log
    # Switched off one by one: the same messages pass.
    reconfigure(suite, "nested_header_checks=", "mime_header_checks=")
    assert send(suite, NESTED).startswith("250 2.0.0 Ok: queued as")
    assert send(suite, EXE).startswith("250 2.0.0 Ok: queued as")
    suite.wait_for_mail(2)
    # Without MIME processing everything after the header is body text.
    reconfigure(suite, "disable_mime_input_processing=yes")
    assert send(suite, EXE) == "550 5.7.1 body_checks saw a MIME header"

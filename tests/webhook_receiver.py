"""A partner's webhook receiver, run as its own process by the tests.

It verifies every call with the ``standardwebhooks`` library (one verdict per ``--secret``),
appends what it got as a JSON line to ``--log``, and answers per ``webhook-id`` from
``--responses``: e.g. ``500,503:2,200`` answers a message's first call 500, its second 503 with
``Retry-After: 2``, and every later one 200 (the last entry repeats).

    python tests/webhook_receiver.py --port-file P --log L --secret whsec_... [--responses ...]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def parse_responses(spec: str) -> list[tuple[int, str | None]]:
    answers: list[tuple[int, str | None]] = []
    for item in spec.split(","):
        code, _, retry_after = item.strip().partition(":")
        answers.append((int(code), retry_after or None))
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", required=True, type=Path)
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--secret", action="append", default=[])
    parser.add_argument("--responses", default="200")
    args = parser.parse_args()
    answers = parse_responses(args.responses)
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            verdicts = []
            for secret in args.secret:
                try:
                    Webhook(secret).verify(body, headers)
                    verdicts.append(True)
                except WebhookVerificationError:
                    verdicts.append(False)
            msg_id = headers.get("webhook-id", "")
            with lock:
                seen[msg_id] += 1
                n = seen[msg_id]
                code, retry_after = answers[min(n, len(answers)) - 1]
                record = {
                    "received_at": time.time(),
                    "path": self.path,
                    "webhook_id": msg_id,
                    "webhook_timestamp": headers.get("webhook-timestamp"),
                    "webhook_signature": headers.get("webhook-signature"),
                    "content_type": headers.get("content-type"),
                    "body": body.decode(),
                    "verified": verdicts,
                    "call": n,
                    "answered": code,
                }
                with args.log.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
            self.send_response(code)
            if retry_after:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *a: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    os.replace(tmp, args.port_file)  # the test reads a whole port number or nothing
    server.serve_forever()


if __name__ == "__main__":
    main()

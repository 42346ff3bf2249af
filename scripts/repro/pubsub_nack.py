"""How the Pub/Sub emulator redelivers a push that is always answered 503 (docs/reliability.md,
"No run is ever stuck"): the pushes it makes, and whether the message reaches the dead-letter
topic.

    .venv/bin/python scripts/repro/pubsub_nack.py [ACK_DEADLINE_SECONDS] [WATCH_SECONDS]

A push subscription with the topology's retry policy (1-60 s) and dead-letter policy (10
attempts) delivers one message to a local endpoint that answers 503 every time, as the tool
invoker answered a call refused by the tools-per-minute limit before issue 12.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "libs"))

from cloudagents.local.emulators import start_pubsub

PROJECT = "repro-project"


def main() -> None:
    ack_deadline = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    watch = float(sys.argv[2]) if len(sys.argv) > 2 else 150.0
    pushes: list[float] = []

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            pushes.append(time.monotonic())
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    emulator = start_pubsub(PROJECT, Path(tempfile.mkdtemp(prefix="repro-pubsub-")))
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.endpoint
    try:
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]
        from google.protobuf import duration_pb2

        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = publisher.topic_path(PROJECT, "work")
        dead = publisher.topic_path(PROJECT, "work-dead-letter")
        parked = subscriber.subscription_path(PROJECT, "work-dead-letter-pull")
        for path in (topic, dead):
            publisher.create_topic(name=path)
        subscriber.create_subscription(name=parked, topic=dead)
        subscriber.create_subscription(
            request={
                "name": subscriber.subscription_path(PROJECT, "work-push"),
                "topic": topic,
                "push_config": {"push_endpoint": f"http://127.0.0.1:{server.server_port}/"},
                "ack_deadline_seconds": ack_deadline,
                "dead_letter_policy": {"dead_letter_topic": dead, "max_delivery_attempts": 10},
                "retry_policy": {
                    "minimum_backoff": duration_pb2.Duration(seconds=1),
                    "maximum_backoff": duration_pb2.Duration(seconds=60),
                },
            }
        )
        started = time.monotonic()
        publisher.publish(topic, b'{"run_id": "r", "seq": 0, "index": 0}').result()
        time.sleep(watch)
        response = subscriber.pull(request={"subscription": parked, "max_messages": 10}, timeout=10)
        print(
            f"ack deadline {ack_deadline} s, watched {watch:g} s: {len(pushes)} pushes at seconds "
            f"{[round(p - started, 1) for p in pushes]}; "
            f"on the dead-letter topic: {len(response.received_messages)}"
        )
    finally:
        emulator.stop()
        server.shutdown()


if __name__ == "__main__":
    main()

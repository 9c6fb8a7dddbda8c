"""A minimal edge daemon for the MQTT tests and benchmarks: MqttPublisher + outbox in their own process.

Publishes `--alerts` alerts (each stored in the outbox before `publish_alert` returns), prints
"stored N", prints "connected" once the broker accepted it, then runs until killed (SIGKILL in the
tests) or until stdin closes (then it closes the publisher cleanly).
"""

from __future__ import annotations

import argparse
import sys

from edge.mqtt import MqttPublisher
from testbed.mqtt import make_alert, mqtt_section


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--broker", required=True, help="mqtt://host:port")
    p.add_argument("--outbox", required=True, help="SQLite outbox path")
    p.add_argument("--device", default="cam1", help="device id (default: %(default)s)")
    p.add_argument("--alerts", type=int, default=0, help="alerts to publish at start (default: %(default)s)")
    p.add_argument("--keepalive-s", type=int, default=30, help="MQTT keep-alive, s (default: %(default)s)")
    args = p.parse_args()
    pub = MqttPublisher(args.device, mqtt_section(args.broker, args.outbox, keepalive_s=args.keepalive_s,
                                                  reconnect_min_s=0.2, reconnect_max_s=1.0))
    for i in range(args.alerts):
        alert = make_alert(args.device, sequence=i)
        print(f"alert {alert['alert_id']}", flush=True)  # the test knows exactly what was produced
        pub.publish_alert(alert)
    print(f"stored {args.alerts}", flush=True)
    while not pub.wait_connected(1.0):
        pass
    print("connected", flush=True)
    sys.stdin.read()  # until the test closes stdin or kills us
    pub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

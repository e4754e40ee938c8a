"""The image's HEALTHCHECK: exit 0 when the service in this container answers /healthz with 200.

One container runs one service, so whichever of the three ports answers is this container's; a service
that answers 503 (its background processing died) is unhealthy. Standard library only.
"""

import os
import sys
import urllib.error
import urllib.request

PORTS = [
    os.environ.get("SENTINEL_INGEST_PORT", "8000"),
    os.environ.get("SENTINEL_SAFETY_PORT", "8001"),
    os.environ.get("SENTINEL_NOTIFY_PORT", "8002"),
]

for port in PORTS:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
            sys.exit(0 if response.status == 200 else 1)
    except urllib.error.HTTPError as exc:
        print(f"/healthz on port {port}: {exc.code}", file=sys.stderr)
        sys.exit(1)
    except OSError:
        continue  # not this container's service
print("no service answers /healthz", file=sys.stderr)
sys.exit(1)

"""Docker HEALTHCHECK of the relay's image: exit 0 when GET /health on the relay's own port answers 200.

Slim Python images have no curl or wget, so Python asks. Never through a proxy: HTTP_PROXY may be set for the way
out to Rocket.Chat.
"""

import os
import sys
import urllib.request

TIMEOUT_SECONDS = 4  # below the HEALTHCHECK --timeout of the Dockerfile (5 s)


def health_url() -> str:
    host = os.environ.get("HOST", "").strip()
    if host in ("", "0.0.0.0", "::", "[::]"):  # listening everywhere: ask over loopback
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('PORT', '').strip() or '8093'}/health"


def main() -> int:
    url = health_url()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_SECONDS) as answer:
            if answer.status == 200:
                return 0
            print(f"unhealthy: GET {url} answered {answer.status}", file=sys.stderr)
    except OSError as error:  # refused, timed out, or an HTTP error status (HTTPError is an OSError)
        print(f"unhealthy: GET {url}: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

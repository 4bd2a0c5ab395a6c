"""Start the model server: `python -m mlops_actions.serving` (the image's entrypoint).

Settings come from the environment, so `docker run -e` changes them without a rebuild:

  MLSERVING_MODEL_DIR        model directory (default /opt/ml/model)
  MLSERVING_HOST / _PORT     listen address (default 0.0.0.0:8080)
  MLSERVING_WORKERS          uvicorn worker processes (default 1; scale with replicas first)
  MLSERVING_MAX_BODY_BYTES   largest request body (default 52428800, 50 MiB)
  MLSERVING_TIMEOUT_SECONDS  longest prediction before 504 (default 60)
  MLSERVING_GRACEFUL_SECONDS time given to in-flight requests on SIGTERM (default 30)
  MLSERVING_LOG_LEVEL        uvicorn log level (default info)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile


def main() -> int:
    import uvicorn

    env = os.environ
    workers = int(env.get("MLSERVING_WORKERS", "1"))
    if workers > 1:
        # Every worker writes its samples here and /metrics adds them up; stale files from a
        # previous start would be counted again, so the directory starts empty.
        directory = env.setdefault(
            "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), "mlserving-metrics")
        )
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)
    uvicorn.run(
        "mlops_actions.serving.app:create_app",
        factory=True,
        host=env.get("MLSERVING_HOST", "0.0.0.0"),  # noqa: S104 - a server in a container
        port=int(env.get("MLSERVING_PORT", "8080")),
        workers=workers,
        timeout_graceful_shutdown=int(env.get("MLSERVING_GRACEFUL_SECONDS", "30")),
        log_level=env.get("MLSERVING_LOG_LEVEL", "info"),
        access_log=False,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

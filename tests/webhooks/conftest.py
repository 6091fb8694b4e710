"""Deliveries signed the way Parallel signs them, for the receiver's tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

# A distinctive secret: if it shows up anywhere it was not meant to, a test finds it.
CANARY_SECRET = "whsec_canary-4c1e8b7d2f9a6053e1d7"
RUN = "trun_0123456789abcdef0123456789abcdef"


def parallel_signature(secret: str, webhook_id: str, timestamp: str, body: str) -> str:
    """Exactly what Parallel's own ``verify_webhook`` (langchain-parallel) computes: HMAC-SHA256 keyed with the
    secret's UTF-8 bytes over ``id.timestamp.body``, base64 with padding."""
    digest = hmac.new(secret.encode("utf-8"), f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def task_run_body(run_id: str = RUN, status: str = "completed", **data: Any) -> str:
    run = {
        "run_id": run_id,
        "status": status,
        "is_active": False,
        "processor": "core",
        "metadata": {"team": "data"},
        "created_at": "2025-08-12T10:00:00Z",
        "modified_at": "2025-08-12T10:01:00Z",
        "error": None,
        "warnings": None,
        **data,
    }
    return json.dumps({"timestamp": "2025-08-12T10:01:00Z", "type": "task_run.status", "data": run})


def signed_headers(
    body: str, secret: str = CANARY_SECRET, *, webhook_id: str | None = None, age_s: int = 0
) -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(time.time()) - age_s)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{parallel_signature(secret, webhook_id, timestamp, body)}",
    }

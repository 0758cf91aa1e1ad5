"""Kedro hooks: a quiet, offline, reproducible run environment."""

from __future__ import annotations

import logging
import os

from kedro.framework.hooks import hook_impl

log = logging.getLogger(__name__)


class RunEnvironmentHooks:
    @hook_impl
    def after_context_created(self, context) -> None:
        # No phoning home from any tool in the stack; the project runs with no network.
        os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
        os.environ.setdefault("DVC_NO_ANALYTICS", "1")
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")

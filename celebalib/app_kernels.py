"""The kernel manager of the app's Voila server: at most ``max_kernels`` kernels alive at once.

Voila starts one kernel per visit and jupyter_server culls the idle ones (``cull_idle_timeout``),
but neither bounds how many run at once. This subclass of jupyter_server's kernel manager,
named by ``python -m celebalib app`` through ``VoilaConfiguration.multi_kernel_manager_class``,
refuses a kernel beyond the bound with HTTP 503, which Voila shows as a one-line page. It runs in
Voila's process only, so nothing else imports jupyter_server.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado.web import HTTPError
from traitlets import Integer

BUSY_MESSAGE = "The explorer is busy: every place is taken. Try again shortly"


class VisitorKernelManager(AsyncMappingKernelManager):
    """jupyter_server's kernel manager with a bound on the kernels alive at once."""

    max_kernels = Integer(8, config=True, help="Kernels alive at once (starting ones included); "
                          "a visit beyond them gets HTTP 503 and a one-line busy page.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._starting: set[str] = set()

    async def start_kernel(self, *, kernel_id: str | None = None, **kwargs: Any) -> str:
        """Start a kernel unless ``max_kernels`` are alive or starting; HTTP 503 then."""
        if kernel_id is not None and kernel_id in self:
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        alive = set(self.list_kernel_ids()) | self._starting
        if len(alive) >= self.max_kernels:
            self.log.warning("Refused a kernel: %d of %d alive or starting", len(alive), self.max_kernels)
            raise HTTPError(503, reason=BUSY_MESSAGE)
        kernel_id = kernel_id or self.new_kernel_id()
        # Reserved before the first await, so visits arriving together cannot all pass the check.
        self._starting.add(kernel_id)
        try:
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        finally:
            self._starting.discard(kernel_id)

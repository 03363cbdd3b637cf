"""The kernel manager of the app's Voila server: at most ``max_kernels`` kernels alive at once.

Voila starts one kernel per visit and jupyter_server culls the idle ones (``cull_idle_timeout``),
but neither bounds how many run at once. This subclass of jupyter_server's kernel manager,
named by ``python -m celebalib app`` through ``VoilaConfiguration.multi_kernel_manager_class``,
refuses a kernel beyond the bound with HTTP 503, which Voila shows as a one-line page. It runs in
Voila's process only, so nothing else imports jupyter_server.

With Voila's preheated pool (``VoilaConfiguration.preheat_kernel``) Voila subclasses this class:
it keeps pooled kernels from the culler and hands one to each visitor. Two gaps are closed here: a
handed-out kernel was last active when it ran the notebook, possibly long before, so the culler
could end it before its page connects; and a refill refused at the bound is dropped, so the pool
is topped up again once culling has made room. And a refill yields to visitors: Voila starts one
a second after each kernel it hands out, which in a burst of visitors runs the notebook again
while their pages load; here it waits until visitors stop arriving and their kernels are idle
(:meth:`VisitorKernelManager.wait_for_quiet`), unless a visitor already waits for that very kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado.web import HTTPError
from traitlets import Float, Integer
from voila.utils import ENV_VARIABLE

BUSY_MESSAGE = "The explorer is busy: every place is taken. Try again shortly"
PREHEAT_VARIABLE = ENV_VARIABLE.VOILA_PREHEAT.value  # "True" in the environment of Voila's pool kernels


class VisitorKernelManager(AsyncMappingKernelManager):
    """jupyter_server's kernel manager with a bound on the kernels alive at once."""

    max_kernels = Integer(8, config=True, help="Kernels alive at once (starting ones included); "
                          "a visit beyond them gets HTTP 503 and a one-line busy page.")
    refill_quiet = Float(10.0, config=True, help="Seconds without a kernel asked for or active (and none starting "
                         "or busy) before a pool refill starts; one a visitor already waits for starts at once.")
    refill_max_wait = Float(60.0, config=True, help="Seconds a pool refill waits for quiet at most.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._starting: set[str] = set()
        self._first_considered: dict[str, datetime] = {}
        self._last_asked = time.monotonic()
        self._stopping = False

    async def start_kernel(self, *, kernel_id: str | None = None, **kwargs: Any) -> str:
        """Start a kernel unless ``max_kernels`` are alive or starting; HTTP 503 then. A pool refill
        first waits for quiet (:meth:`wait_for_quiet`)."""
        if kernel_id is not None and kernel_id in self:
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        self._last_asked = time.monotonic()
        if (kwargs.get("env") or {}).get(PREHEAT_VARIABLE) == "True":
            await self.wait_for_quiet()
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

    async def wait_for_quiet(self) -> float:
        """Hold a pool refill while visitors arrive or their kernels work; return the seconds waited.

        The refill starts once no kernel has been asked for or active in ``refill_quiet`` seconds and
        none is starting or busy (running a notebook, or answering a page), at most
        ``refill_max_wait`` seconds later. A refill's own request counts as asked: Voila asks for one
        a second after each kernel it hands out, so the requests mark the visits. It starts at once
        when a visitor takes the place it fills: Voila's pool is a list of tasks, one per place, and
        a visitor who finds no kernel ready takes the first task from the list and waits for it, so
        while the task running this refill is in the list nobody waits for it. The first pool, with
        no kernel alive yet, starts at once too.
        """
        task, start = asyncio.current_task(), time.monotonic()
        # `_pools` exists only on Voila's pooled subclass (preheat_kernel).
        if getattr(self, "_pools", None) is None or not self.list_kernel_ids():
            return 0.0
        while time.monotonic() - start < self.refill_max_wait:
            if self._stopping:
                raise RuntimeError("the app is stopping: no pool refill")
            if not any(task in places for places in self._pools.values()):
                break  # a visitor waits for this kernel
            if self.quiet_for() >= self.refill_quiet and not self.working():
                break
            await asyncio.sleep(0.1)
        return time.monotonic() - start

    def quiet_for(self) -> float:
        """Seconds since a kernel was last asked for or last active (any message from it: a page's
        requests, a notebook's outputs), whichever is later."""
        now = datetime.now(timezone.utc)
        active = [kernel.last_activity for kernel in self._kernel_markers() if hasattr(kernel, "last_activity")]
        return min([time.monotonic() - self._last_asked, *((now - when).total_seconds() for when in active)])

    def working(self) -> bool:
        """True while a kernel is starting or busy (running code: a notebook, or a page's requests)."""
        return bool(self._starting) or any(getattr(kernel, "execution_state", None) == "busy"
                                           for kernel in self._kernel_markers())

    def _kernel_markers(self) -> list[Any]:
        """The kernels alive; jupyter_server marks each with ``execution_state`` and ``last_activity``
        once it has started."""
        kernels = []
        for kernel_id in self.list_kernel_ids():
            with contextlib.suppress(KeyError):
                kernels.append(self.get_kernel(kernel_id))
        return kernels

    async def shutdown_all(self, now: bool = False) -> None:
        """Shut every kernel down; a refill still waiting gives up instead of starting one."""
        self._stopping = True
        await super().shutdown_all(now=now)

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        """Cull as jupyter_server does, but never within ``cull_idle_timeout`` of first considering a kernel.

        Voila's pool does not pass its kernels here, so a pooled kernel's timeout starts when a
        visitor takes it (within one ``cull_interval``), not when it ran the notebook.
        """
        now = datetime.now(timezone.utc)
        first = self._first_considered.setdefault(kernel_id, now)
        if now - first < timedelta(seconds=self.cull_idle_timeout):
            return
        await super().cull_kernel_if_idle(kernel_id)

    async def cull_kernels(self) -> None:
        """Cull idle kernels, then top Voila's preheated pool up if there is room under the bound."""
        await super().cull_kernels()
        alive = set(self.list_kernel_ids())
        self._first_considered = {kid: when for kid, when in self._first_considered.items() if kid in alive}
        # `fill_if_needed` and `notebook_path` exist only on Voila's pooled subclass (preheat_kernel).
        fill = getattr(self, "fill_if_needed", None)
        if fill is not None and getattr(self, "notebook_path", None) and len(alive | self._starting) < self.max_kernels:
            fill(delay=0, notebook_name=self.notebook_path)

"""`python manage.py sfu`: run one SFU worker process (needs REDIS_URL)."""

from __future__ import annotations

import asyncio
import signal

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from signaling.sfu.worker import SfuWorker


class Command(BaseCommand):
    help = "Run an SFU worker for group calls; rooms are assigned to live workers via Redis."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--id", help="worker id (default: random)")

    def handle(self, *args, **options) -> None:
        if not settings.REDIS_URL:
            raise CommandError(
                "REDIS_URL is not set: without Redis the SFU runs inside daphne (in-process)."
            )
        asyncio.run(self.serve(options.get("id")))

    async def serve(self, worker_id: str | None) -> None:
        worker = SfuWorker(get_channel_layer(), worker_id)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        worker.start()
        self.stdout.write(f"SFU worker {worker.id} serving on {worker.channel}", ending="\n")
        self.stdout.flush()
        await stop.wait()
        await worker.stop()

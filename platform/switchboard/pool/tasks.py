from __future__ import annotations

from celery import shared_task

from switchboard.pool import services


@shared_task(queue="default", ignore_result=True)
def pool_health_check() -> dict[str, bool]:
    return services.pool_health_check()

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def usage_rollups_update() -> int:
    """Carry the hourly and daily rollups forward over new ledger rows (beat, every minute)."""
    from switchboard.metering.rollups import rollups_update

    return rollups_update()


@shared_task(ignore_result=True)
def alerts_deliver_pending() -> int:
    """Send alerts whose webhook delivery has not succeeded yet (beat, every minute)."""
    from switchboard.metering.alerts import alerts_deliver_pending as deliver

    return deliver()


@shared_task(ignore_result=True)
def alert_deliver(alert_id: int) -> None:
    from switchboard.metering.alerts import alert_deliver as deliver

    deliver(alert_id=alert_id)

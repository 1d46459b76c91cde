"""The Notifier on Slack's Web API: renders with the views and posts through the client."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from slack_sdk.web.async_client import AsyncWebClient

from bot.reads import Dashboard, EntryView, IncidentView, OperationView
from bot.views.alerts import incident_blocks, incident_text, thread_blocks, thread_text
from bot.views.home import home_view
from bot.views.operations import operation_blocks, operation_text


class SlackNotifier:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post_incident(self, channel: str, incident: IncidentView) -> str:
        blocks = [b.to_dict() for b in incident_blocks(incident)]
        resp = await self.client.chat_postMessage(
            channel=channel, text=incident_text(incident), blocks=blocks
        )
        return str(resp["ts"])

    async def update_incident(self, channel: str, ts: str, incident: IncidentView) -> None:
        blocks = [b.to_dict() for b in incident_blocks(incident)]
        await self.client.chat_update(
            channel=channel, ts=ts, text=incident_text(incident), blocks=blocks
        )

    async def post_thread(
        self,
        channel: str,
        thread_ts: str,
        incident: IncidentView,
        entries: Sequence[EntryView],
        *,
        reminder: bool = False,
    ) -> str:
        resp = await self.client.chat_postMessage(
            channel=channel,
            thread_ts=thread_ts,
            reply_broadcast=reminder,  # a reminder is re-announced in the channel too
            text=thread_text(incident, entries, reminder),
            blocks=[b.to_dict() for b in thread_blocks(incident, entries, reminder)],
        )
        return str(resp["ts"])

    async def post_operation(self, channel: str, op: OperationView) -> str:
        blocks = [b.to_dict() for b in operation_blocks(op)]
        resp = await self.client.chat_postMessage(
            channel=channel, text=operation_text(op), blocks=blocks
        )
        return str(resp["ts"])

    async def update_operation(self, channel: str, ts: str, op: OperationView) -> None:
        blocks = [b.to_dict() for b in operation_blocks(op)]
        await self.client.chat_update(
            channel=channel, ts=ts, text=operation_text(op), blocks=blocks
        )

    async def post_operation_note(self, channel: str, thread_ts: str, text: str) -> str:
        resp = await self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=text)
        return str(resp["ts"])

    async def publish_home(self, user: str, dashboard: Dashboard, at: datetime) -> None:
        await self.client.views_publish(user_id=user, view=home_view(dashboard, at))

"""The Notifier on Slack's Web API: renders with the views and posts through the client."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from slack_sdk.web.async_client import AsyncWebClient

from bot.reads import Dashboard, EntryView, IncidentView, OperationView, SilenceNotice
from bot.views.alerts import incident_blocks, incident_text, thread_blocks, thread_text
from bot.views.home import home_view
from bot.views.operations import operation_blocks, operation_text
from bot.views.silences import silence_notice_blocks, silence_notice_text
from bot.views.text import escape, with_actor


class SlackNotifier:
    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post_incident(self, channel: str, incident: IncidentView) -> str:
        blocks = [b.to_dict() for b in incident_blocks(incident)]
        # the top-level text is mrkdwn too (it is the notification): escaped like the blocks
        resp = await self.client.chat_postMessage(
            channel=channel, text=escape(incident_text(incident)), blocks=blocks
        )
        return str(resp["ts"])

    async def update_incident(self, channel: str, ts: str, incident: IncidentView) -> None:
        blocks = [b.to_dict() for b in incident_blocks(incident)]
        await self.client.chat_update(
            channel=channel, ts=ts, text=escape(incident_text(incident)), blocks=blocks
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

    async def post_silence(self, channel: str, notice: SilenceNotice) -> str:
        resp = await self.client.chat_postMessage(
            channel=channel,
            text=silence_notice_text(notice),
            blocks=[b.to_dict() for b in silence_notice_blocks(notice)],
        )
        return str(resp["ts"])

    async def post_operation(self, channel: str, op: OperationView) -> str:
        blocks = [b.to_dict() for b in operation_blocks(op)]
        resp = await self.client.chat_postMessage(
            channel=channel, text=escape(operation_text(op)), blocks=blocks
        )
        return str(resp["ts"])

    async def update_operation(self, channel: str, ts: str, op: OperationView) -> None:
        blocks = [b.to_dict() for b in operation_blocks(op)]
        await self.client.chat_update(
            channel=channel, ts=ts, text=escape(operation_text(op)), blocks=blocks
        )

    async def post_operation_note(self, channel: str, thread_ts: str, text: str) -> str:
        # a journal line quotes reasons, relays' and Cloudflare's errors: text, never markup;
        # who acted, named at its start by the bot, is mentioned
        resp = await self.client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, text=with_actor(escape(text))
        )
        return str(resp["ts"])

    async def publish_home(self, user: str, dashboard: Dashboard, at: datetime) -> None:
        await self.client.views_publish(user_id=user, view=home_view(dashboard, at))

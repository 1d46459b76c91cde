"""A message ready for Slack: fallback text, Block Kit blocks, and where it goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import Block, ContextBlock, MarkdownTextObject, SectionBlock


@dataclass(frozen=True)
class Reply:
    text: str  # the notification and fallback text
    blocks: list[Block] = field(default_factory=list)
    public: bool = False  # False: only the asker sees it (ephemeral)
    outcome: str = "ok"  # for the audit trail: ok, rejected, error

    def block_dicts(self) -> list[dict[str, Any]]:
        return [b.to_dict() for b in self.blocks]


SECTION_LIMIT = 3000  # Slack refuses a longer text object


def clip(text: str, limit: int = SECTION_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def section(markdown: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=clip(markdown)))


def context(*markdown: str) -> ContextBlock:
    return ContextBlock(elements=[MarkdownTextObject(text=clip(m)) for m in markdown])

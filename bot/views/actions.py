"""The action ids of the bot's buttons: one list, used by the views that draw the buttons, the
Slack app that routes their clicks, and the commands that answer them."""

from __future__ import annotations

import re
from enum import StrEnum


class Action(StrEnum):
    CONFIRM = "confirm_operation"
    APPROVE = "approve_operation"
    CANCEL = "cancel_operation"
    SILENCE = "silence_region"  # the region follows after a colon: silence_region:eu-west
    TIMELINE = "show_timeline"
    ACKNOWLEDGE = "acknowledge_page"  # the value is the incident's number


# Every click the Slack app hands to the router (a silence id carries its region).
ACTION_IDS = re.compile("^(" + "|".join(re.escape(a) for a in Action) + ")")

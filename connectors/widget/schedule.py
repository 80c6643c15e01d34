"""Which tabs a widget shows at a moment, and when that changes: the server decides.

The calendar is the gateway's (per-channel hours for `chat` and `callback`, holidays and
transferred days included), asked through the pipeline like every connector does, so the
widget, the leads' SLA and the auto-replies never disagree about whether we are open.

- chat is shown while the `chat` channel is open;
- callback is shown while `callback` is open, and while closed in `form_and_callback` mode
  (then as a request, with when we call);
- the form is shown while the widget is open (any of its chat and callback channels is),
  and while closed in `form_and_callback` mode.
The answer carries the next moment any of this changes, so the page switches at 19:00
without a reload: the widget asks again then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from connectors.widget.settings import OffHours, Tab, WidgetSettings
from gateway.models import Channel
from gateway.pipeline import Pipeline

# However far the next change, the widget asks again within this: a holiday added to the
# config (and a restart) reaches open pages, and a laptop waking from sleep catches up.
MAX_RECHECK = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class TabState:
    tab: Tab
    channel: str
    open: bool  # its channel is in working time now
    shown: bool
    opens_at: datetime | None  # when a closed channel opens


@dataclass(frozen=True, slots=True)
class WidgetState:
    tabs: tuple[TabState, ...]
    next_change_at: datetime

    @property
    def visible(self) -> bool:
        return any(t.shown for t in self.tabs)

    def tab(self, tab: Tab) -> TabState | None:
        return next((t for t in self.tabs if t.tab is tab), None)

    def recheck_in(self, now: datetime) -> float:
        """Seconds until the widget should ask again (relative: the visitor's clock may be
        anything)."""
        return max(0.0, (min(self.next_change_at, now + MAX_RECHECK) - now).total_seconds())


def channel_of(tab: Tab, widget: WidgetSettings) -> str:
    if tab is Tab.FORM:
        return widget.form.channel
    return Channel.CHAT.value if tab is Tab.CHAT else Channel.CALLBACK.value


def widget_state(pipeline: Pipeline, widget: WidgetSettings, now: datetime) -> WidgetState:
    facts: dict[str, tuple[bool, datetime | None, datetime]] = {}

    def fact(channel: str) -> tuple[bool, datetime | None, datetime]:
        """(open, opens_at when closed, next change) for a channel, asked once."""
        if channel not in facts:
            verdict = pipeline.classify(now, channel)
            if verdict.after_hours:
                opens = verdict.next_open_at or now
                facts[channel] = (False, opens, opens)
            else:
                until = pipeline.open_until(now, channel) or now + MAX_RECHECK
                facts[channel] = (True, None, until)
        return facts[channel]

    # The widget is open while any of its live channels is; a form-only widget follows
    # the form's own channel.
    live = [channel_of(t, widget) for t in widget.tabs if t is not Tab.FORM]
    widget_open = any(fact(ch)[0] for ch in live or [channel_of(Tab.FORM, widget)])
    keep_offline = widget.off_hours is OffHours.FORM_AND_CALLBACK
    tabs = []
    for tab in widget.tabs:
        channel = channel_of(tab, widget)
        is_open, opens_at, _ = fact(channel)
        if tab is Tab.CHAT:
            shown = is_open
        elif tab is Tab.CALLBACK:
            shown = is_open or keep_offline
        else:
            shown = widget_open or keep_offline
        tabs.append(TabState(tab, channel, is_open, shown, opens_at))
    next_change = min(change for _, _, change in facts.values())
    return WidgetState(tuple(tabs), next_change)

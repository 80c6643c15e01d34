"""The /ops page as HTML: self-contained (inline CSS, SVG charts and a few lines of script,
nothing from a CDN), Russian first and translatable like the forms' pages.

`page()` is the whole document; `panel()` is the part the script fetches every few seconds
and swaps in, so the page refreshes without a reload (and without losing its scroll).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo

from gateway.channels import StatusValue
from gateway.i18n import N_, gettext_for
from gateway.ops_snapshot import Snapshot
from gateway.supervisor import mask_details
from gateway.svg_charts import sparkline, stacked_bars
from gateway.texts import localized

REFRESH_SECONDS = 10
PALETTE = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")

STATE = {
    "ok": N_("работает"),
    "degraded": N_("с проблемами"),
    "unavailable": N_("недоступен"),
}
# Where a readiness problem comes from, as a person reads it.
SOURCES = {
    "store": N_("хранилище"),
    "assignment": N_("назначение продавцов"),
    "tasks": N_("фоновые задачи"),
    "delivery": N_("доставка в CRM"),
    "email": N_("почта"),
    "telephony": N_("телефония"),
    "webform": N_("формы"),
    "orders": N_("заказы"),
}
# The roster's problems are plain English strings (gateway.assign): their Russian here.
ROSTER = {
    "no sellers configured": N_("не настроен ни один продавец"),
    "no active sellers": N_("нет активных продавцов"),
    "no active seller has working hours": N_("ни у одного активного продавца нет рабочих часов"),
}
OUTCOMES = {
    "created": N_("новых лидов"),
    "merged": N_("к открытым лидам"),
    "kept": N_("без лида"),
}

L_VERSION = N_("версия")
L_UP = N_("работает уже")
L_UPDATED = N_("обновлено")
L_PROBLEMS = N_("Проблемы")
L_NO_CHANNELS = N_("Каналы ещё не настроены.")
L_OFF = N_("не включён")
L_CHANNELS = N_("Каналы")
L_FINE = N_("в порядке")
L_STATE = N_("состояние")
L_REFRESH = N_("Обновляется каждые {n} с.")
L_LOGOUT = N_("Выйти")
L_LOGIN_TITLE = N_("вход")
L_TOKEN = N_("Токен")
L_LOGIN = N_("Войти")
MSG_OFFLINE = N_("Нет связи с gateway: показаны прошлые данные")
MSG_LOGIN = N_("Страница состояния открыта по токену администратора ([admin.tokens]).")

Gettext = Callable[[str], str]


def _e(text: object) -> str:
    return html.escape(str(text))


def _when(at: datetime | None, tz: tzinfo, now: datetime, _: Gettext) -> str:
    if at is None:
        return _("никогда")
    local, today = at.astimezone(tz), now.astimezone(tz)
    if local.date() == today.date():
        return f"{local:%H:%M:%S}"
    return f"{local:%d.%m.%Y %H:%M}"


def _age(seconds: float, _: Gettext) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return _("{n} с").format(n=int(seconds))
    if minutes < 60:
        return _("{n} мин").format(n=minutes)
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return _("{h} ч {m} мин").format(h=hours, m=minutes)
    days, hours = divmod(hours, 24)
    return _("{d} д {h} ч").format(d=days, h=hours)


def _value(value: StatusValue, snap: Snapshot, locale: str, _: Gettext) -> str:
    if value is None:
        return _("нет")
    if isinstance(value, datetime):
        return _when(value, snap.tz, snap.now, _)
    if isinstance(value, str):
        return mask_details(localized(value, locale, snap.tz))
    return str(value)


# --- the panel -------------------------------------------------------------------------------


def panel(snap: Snapshot, locale: str) -> str:
    _ = gettext_for(locale)
    tz, now = snap.tz, snap.now
    state = _(STATE[snap.status])
    head = (
        f'<div class="head"><h1>leadgate: <span class="state {snap.status}" id="state">'
        f"{_e(state)}</span></h1>"
        f'<div class="meta">{_e(_(L_VERSION))} <b id="version">{_e(snap.version)}</b> · '
        f'{_e(_(L_UP))} <b id="uptime">{_e(_age(snap.uptime_seconds, _))}</b> · '
        f'{_e(_(L_UPDATED))} <b id="updated">{now.astimezone(tz):%H:%M:%S}</b></div></div>'
    )
    problems = ""
    if snap.problems:
        items = "".join(
            f"<li><b>{_e(_(SOURCES[src]) if src in SOURCES else src)}</b>: "
            f"{_e(mask_details(_problem(text, locale, snap)))}</li>"
            for src, text in snap.problems
        )
        problems = (
            f'<section class="problems"><h2>{_e(_(L_PROBLEMS))}</h2><ul>{items}</ul></section>'
        )
    return (
        head
        + problems
        + _cards(snap, _)
        + _charts(snap, _)
        + _channels(snap, _)
        + (_connectors(snap, locale, _))
    )


def _problem(text: str, locale: str, snap: Snapshot) -> str:
    if text in ROSTER:
        return gettext_for(locale)(ROSTER[text])
    return localized(text, locale, snap.tz)


def _card(title: str, rows: Sequence[tuple[str, str, str]]) -> str:
    body = "".join(
        f'<div class="row"><span>{_e(label)}</span><b data-metric="{key}">{_e(value)}</b></div>'
        for key, label, value in rows
    )
    return f'<div class="card"><h3>{_e(title)}</h3>{body}</div>'


def _cards(snap: Snapshot, _: Gettext) -> str:
    cards = []
    if snap.outbox is not None:
        ob = snap.outbox
        oldest = (
            _age((snap.now - ob.oldest_pending_at).total_seconds(), _)
            if ob.oldest_pending_at is not None
            else "—"
        )
        cards.append(
            _card(
                _("Очередь в CRM ({sink})").format(sink=snap.sink),
                [
                    ("outbox-pending", _("ожидают доставки"), str(ob.pending)),
                    ("outbox-oldest", _("старейшая ждёт"), oldest),
                    ("outbox-dead", _("в очереди ошибок (DLQ)"), str(ob.dead)),
                ],
            )
        )
    if snap.leads is not None:
        ld = snap.leads
        cards.append(
            _card(
                _("Лиды за сутки (в статусе NEW)"),
                [
                    ("leads-new", _("новых"), str(ld.new)),
                    ("leads-unassigned", _("без продавца"), str(ld.unassigned)),
                    ("leads-overdue", _("срок реакции истёк"), str(ld.overdue)),
                ],
            )
        )
    return f'<section class="cards">{"".join(cards)}</section>'


def _colors(snap: Snapshot) -> dict[str, str]:
    return {row.channel: PALETTE[i % len(PALETTE)] for i, row in enumerate(snap.channels)}


def _charts(snap: Snapshot, _: Gettext) -> str:
    if not snap.channels:
        return f'<section><p class="muted">{_e(_(L_NO_CHANNELS))}</p></section>'
    colors = _colors(snap)
    tz = snap.tz
    day = [(row.label, colors[row.channel], row.hourly) for row in snap.channels]
    recent = [(row.label, colors[row.channel], row.recent) for row in snap.channels]
    legend = "".join(
        f'<span class="key"><i style="background:{colors[row.channel]}"></i>{_e(row.label)}</span>'
        for row in snap.channels
    )

    def hour(start: datetime) -> str:
        local = start.astimezone(tz)
        return f"{local:%H:%M}–{(local.hour + 1) % 24:02d}:00"

    def five(start: datetime) -> str:
        return f"{start.astimezone(tz):%H:%M}"

    title_day = _("События по каналам за сутки, по часам")
    title_recent = _("За три часа, по 5 минут")
    return (
        f'<section><h2>{_e(title_day)}</h2><div class="legend">{legend}</div>'
        + stacked_bars(
            day,
            snap.hours,
            tz,
            title=title_day,
            label_every=3,
            step_label=hour,
            chart_id="chart-day",
        )
        + f"<h2>{_e(title_recent)}</h2>"
        + stacked_bars(
            recent,
            snap.recent,
            tz,
            title=title_recent,
            label_every=6,
            step_label=five,
            chart_id="chart-recent",
        )
        + "</section>"
    )


def _channels(snap: Snapshot, _: Gettext) -> str:
    if not snap.channels:
        return ""
    colors = _colors(snap)
    head = "".join(
        f"<th>{_e(h)}</th>"
        for h in (
            _("канал"),
            _("последнее событие"),
            *(_(OUTCOMES[o]) for o in OUTCOMES),
            _("за сутки"),
        )
    )
    rows = []
    for row in snap.channels:
        off = "" if row.connector else f' <span class="muted">({_e(_(L_OFF))})</span>'
        counts = "".join(
            f'<td data-metric="day-{row.channel}-{o}">{row.outcomes.get(o, 0)}</td>'
            for o in OUTCOMES
        )
        rows.append(
            f"<tr><td>{_e(row.label)}{off}</td>"
            f'<td data-metric="last-{row.channel}">'
            f"{_e(_when(row.last_event_at, snap.tz, snap.now, _))}</td>{counts}"
            f"<td>{sparkline(row.hourly, colors[row.channel])}</td></tr>"
        )
    return (
        f"<section><h2>{_e(_(L_CHANNELS))}</h2><table><tr>{head}</tr>{''.join(rows)}</table>"
        "</section>"
    )


def _connectors(snap: Snapshot, locale: str, _: Gettext) -> str:
    blocks = []
    for c in snap.connectors:
        state = (
            f'<span class="bad">{_e(mask_details(localized(c.problem, locale, snap.tz)))}</span>'
            if c.problem
            else f'<span class="good">{_e(_(L_FINE))}</span>'
        )
        lines = "".join(
            f"<tr><td>{_e(_(str(k)))}</td><td>{_e(_value(v, snap, locale, _))}</td></tr>"
            for k, v in c.status.items()
        )
        blocks.append(
            f'<div class="card wide" data-connector="{_e(c.name)}"><h3>{_e(c.name)}: {state}</h3>'
            f"<table>{lines}</table></div>"
        )
    if not blocks:
        return ""
    title = _e(_("Подключения"))
    return f'<section><h2>{title}</h2><div class="cards">{"".join(blocks)}</div></section>'


# --- the documents ---------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#111}
main{max-width:1100px;margin:0 auto;padding:1em 1.5em}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
h3{font-size:1em;margin:0 0 .5em}
.head{display:flex;flex-wrap:wrap;justify-content:space-between;align-items:baseline}
.meta{color:#555}.muted{color:#777}
.state.ok{color:#15803d}.state.degraded{color:#b45309}.state.unavailable{color:#b91c1c}
.problems{background:#fff7ed;border:1px solid #fdba74;border-radius:6px;padding:.2em 1em}
.cards{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:.8em 1em;min-width:16em}
.card.wide{flex:1 1 20em}.row{display:flex;justify-content:space-between;gap:2em}
table{border-collapse:collapse;background:#fff}td,th{padding:.25em .8em;text-align:left;
border-bottom:1px solid #eee}th{font-weight:600;color:#444}
.chart{width:100%;height:auto;background:#fff;border:1px solid #e5e7eb;border-radius:6px}
.chart .axis{stroke:#bbb}.chart .tick{font-size:10px;fill:#666}
.chart .slot{fill:transparent}.chart .slot:hover{fill:rgba(0,0,0,.06)}
.spark{width:120px;height:24px}.legend{margin:.3em 0}.key{margin-right:1em}
.key i{display:inline-block;width:.8em;height:.8em;margin-right:.3em;border-radius:2px}
.good{color:#15803d;font-weight:normal}.bad{color:#b91c1c;font-weight:normal}
.offline{display:none;background:#fee2e2;padding:.4em 1em}.offline.on{display:block}
footer{margin:2em 0;color:#666}form.inline{display:inline}
"""

# Fetches the panel and swaps it in; a 401 (the session ran out) reloads into the login.
_SCRIPT = """
(function(){
  var panel=document.getElementById('panel'), off=document.getElementById('offline');
  function tick(){
    fetch('/ops/panel',{credentials:'same-origin',cache:'no-store'}).then(function(r){
      if(r.status===401){location.reload();return null;}
      if(!r.ok){throw new Error(r.status);}
      return r.text();
    }).then(function(t){
      if(t!==null){panel.innerHTML=t;off.classList.remove('on');}
    }).catch(function(){off.classList.add('on');});
  }
  setInterval(tick, %d);
})();
"""


def page(snap: Snapshot, locale: str, nonce: str) -> str:
    _ = gettext_for(locale)
    return (
        f'<!doctype html><html lang="{locale}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>leadgate — {_e(_(L_STATE))}</title><style>{_STYLE}</style></head><body>"
        f'<div class="offline" id="offline">{_e(_(MSG_OFFLINE))}</div>'
        f'<main><div id="panel">{panel(snap, locale)}</div>'
        f"<footer>{_e(_(L_REFRESH).format(n=REFRESH_SECONDS))} "
        '<a href="/metrics">/metrics</a> · <a href="/readyz">/readyz</a> · '
        '<a href="/ops/data">/ops/data</a> · '
        f'<form class="inline" method="post" action="/ops/logout"><button>{_e(_(L_LOGOUT))}'
        "</button></form></footer></main>"
        f'<script nonce="{nonce}">{_SCRIPT % (REFRESH_SECONDS * 1000)}</script></body></html>'
    )


def login_page(locale: str, error: str | None = None) -> str:
    _ = gettext_for(locale)
    problem = f'<p class="bad">{_e(error)}</p>' if error else ""
    return (
        f'<!doctype html><html lang="{locale}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>leadgate — {_e(_(L_LOGIN_TITLE))}</title><style>{_STYLE}</style></head>"
        "<body><main>"
        f"<h1>leadgate</h1><p>{_e(_(MSG_LOGIN))}</p>"
        f'{problem}<form method="post" action="/ops/login">'
        f'<label>{_e(_(L_TOKEN))} <input type="password" name="token" '
        'autocomplete="current-password" required autofocus></label> '
        f"<button>{_e(_(L_LOGIN))}</button></form></main></body></html>"
    )

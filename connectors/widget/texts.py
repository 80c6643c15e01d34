"""Everything the widget says to a visitor, Russian first and translated by catalog.

The browser holds no text of its own: the state answer carries the interface strings in
the visitor's language (gateway.i18n negotiates it from the page's `lang` and the browser's
languages), so one catalog serves forms, e-mail and the widget, and a new language is a
new .po file. The operator's own texts ([widget.NAME] title, [widget.NAME.texts.LANG])
win over the catalog's.
"""

from __future__ import annotations

from collections.abc import Callable

from connectors.widget.settings import WidgetSettings, WidgetTexts
from gateway.i18n import N_

Gettext = Callable[[str], str]

# Seller-facing (the lead's text in the CRM): Russian, not translated.
CALLBACK_TEXT = "Просит перезвонить (виджет на сайте)"

# Server answers.
MSG_CONSENT = N_("Нужно ваше согласие на обработку персональных данных")
MSG_PHONE = N_("Укажите телефон полностью, например +7 916 123-45-67")
MSG_INVALID = N_("Проверьте поля формы")
MSG_TOO_MANY = N_("Слишком много заявок с вашего адреса, попробуйте через {seconds} с")
MSG_TOO_MANY_MESSAGES = N_("Слишком много сообщений. Подождите {seconds} с и отправьте снова.")
MSG_TOO_MANY_CHATS = N_("Слишком много новых чатов с вашего адреса, попробуйте через {seconds} с")
MSG_TOO_LONG = N_("Сообщение слишком длинное: не больше {limit} символов")
MSG_CHAT_CLOSED = N_("Чат сейчас закрыт. Оставьте заявку — мы свяжемся с вами.")
MSG_FAILED = N_("Не получилось отправить. Попробуйте ещё раз.")
MSG_CALLBACK_SOON = N_("Спасибо! Перезвоним до {time}.")
# The deadline falls on another day (asked just before closing): the day is named.
MSG_CALLBACK_BY = N_("Спасибо! Перезвоним {when}.")
MSG_CALLBACK_LATER = N_("Спасибо! Мы сейчас не на связи и перезвоним {when}.")
MSG_FORM_SOON = N_("Спасибо! Заявка принята.")
MSG_FORM_LATER = N_("Спасибо! Заявка принята. Мы ответим {when}.")

DEFAULT_TITLE = N_("Мы на связи")
DEFAULT_LAUNCHER = N_("Напишите нам")
DEFAULT_GREETING = N_("Здравствуйте! Напишите ваш вопрос — менеджер ответит здесь же.")
DEFAULT_CLOSED = N_("Сейчас мы не на связи. Ответим {when}.")
DEFAULT_CALLBACK_INTRO = N_("Оставьте номер — менеджер перезвонит вам.")
DEFAULT_FORM_INTRO = N_("Опишите, что вам нужно, — мы подготовим предложение.")

# The interface, by key; the browser's script looks them up by these names.
UI = {
    "close": N_("Закрыть"),
    "tabs": N_("Способы связи"),
    "tab_chat": N_("Чат"),
    "tab_callback": N_("Перезвоните мне"),
    "tab_form": N_("Заявка"),
    "message": N_("Сообщение"),
    "send": N_("Отправить"),
    "prechat_intro": N_("Представьтесь, чтобы мы могли связаться с вами, если чат прервётся."),
    "start_chat": N_("Начать чат"),
    "name": N_("Имя"),
    "phone": N_("Телефон"),
    "email": N_("Email"),
    "callback_submit": N_("Жду звонка"),
    "form_submit": N_("Отправить заявку"),
    "consent": N_("Я даю согласие на обработку моих персональных данных в соответствии с {link}"),
    "consent_link": N_("политикой обработки персональных данных"),
    "consent_required": MSG_CONSENT,
    "required": N_("Заполните это поле"),
    "phone_invalid": MSG_PHONE,
    "email_invalid": N_("Проверьте адрес почты: он должен быть вида name@example.ru"),
    "sending": N_("Отправляем…"),
    "offline": N_("Нет связи с сервером. Переподключаемся…"),
    "failed": MSG_FAILED,
    "too_long": MSG_TOO_LONG,
    "you": N_("Вы"),
    "seller": N_("Менеджер"),
    "auto": N_("Автоответ"),
    "chat_closed": MSG_CHAT_CLOSED,
    "choose": N_("Выберите…"),
}

# Labels of the default form's fields (gateway.config), so they are translated too; an
# operator's own labels are shown as written.
N_("Имя")
N_("Телефон")
N_("Email")
N_("Тип оборудования")
N_("Комментарий")
N_("Крупное")
N_("Мелкое")


def own_texts(widget: WidgetSettings, locale: str) -> WidgetTexts:
    return next((t for lang, t in widget.texts.items() if lang == locale), WidgetTexts())


def interface(widget: WidgetSettings, locale: str, _: Gettext) -> dict[str, str]:
    """Every string the widget shows, in `locale`."""
    own = own_texts(widget, locale)
    texts = {key: _(msgid) for key, msgid in UI.items()}
    texts["title"] = own.title or widget.title or _(DEFAULT_TITLE)
    texts["launcher"] = own.launcher or _(DEFAULT_LAUNCHER)
    texts["greeting"] = own.greeting or _(DEFAULT_GREETING)
    texts["callback_intro"] = own.callback_intro or _(DEFAULT_CALLBACK_INTRO)
    texts["form_intro"] = own.form_intro or _(DEFAULT_FORM_INTRO)
    return texts


def closed_note(widget: WidgetSettings, locale: str, when: str, _: Gettext) -> str:
    template = own_texts(widget, locale).closed or _(DEFAULT_CLOSED)
    return template.format(when=when)

"""Meta webhook bodies -> typed items, and the signature over their raw bytes: pure, no I/O.

Every fixture is a published payload (tests/connectors/fixtures/meta/SOURCES.md); doc
examples that Meta prints as single items or with placeholders are wrapped or filled here,
visibly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from meta_support import (
    APP_SECRET,
    IG_ID,
    PAGE_ID,
    PSID,
    as_meta_sends,
    envelope,
    fill,
    fixture,
    fixture_bytes,
)

from connectors.meta import signature
from connectors.meta.messages import message_event
from connectors.meta.webhook import ItemKind, MetaObject, WebhookInvalid, parse
from gateway.models import Channel

RECEIVED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def body(data: object) -> bytes:
    return as_meta_sends(data)


# --- signature ------------------------------------------------------------------------------


def test_the_published_signature_vector_verifies() -> None:
    vector = fixture("signature_vector_pywa.meta.json")
    raw = fixture_bytes(vector["body_file"])
    assert len(raw) == vector["body_bytes"]
    assert signature.verify(vector["app_secret"], raw, vector["x_hub_signature_256"])
    assert signature.sign(vector["app_secret"], raw) == vector["x_hub_signature_256"]
    # One byte more or less, another secret, another header: no.
    assert not signature.verify(vector["app_secret"], raw + b"\n", vector["x_hub_signature_256"])
    assert not signature.verify("another-secret", raw, vector["x_hub_signature_256"])
    assert not signature.verify(vector["app_secret"], raw, None)
    assert not signature.verify(vector["app_secret"], raw, "")
    assert not signature.verify(
        vector["app_secret"], raw, vector["x_hub_signature_256"].replace("sha256=", "sha1=")
    )
    assert not signature.verify(
        vector["app_secret"], raw, vector["x_hub_signature_256"].removeprefix("sha256=")
    )
    assert signature.verify(vector["app_secret"], raw, vector["x_hub_signature_256"].upper())


def test_cyrillic_verifies_over_the_escaped_bytes_meta_sends() -> None:
    vector = fixture("messenger_text_cyrillic.meta.json")
    raw = fixture_bytes(vector["body_file"])
    assert b"\\u0417" in raw and raw.isascii()  # escaped, as Meta sends non-ASCII
    assert vector["app_secret"] == APP_SECRET
    assert signature.verify(APP_SECRET, raw, vector["x_hub_signature_256"])
    # The same JSON re-serialised with the letters as UTF-8 is other bytes: no match. This
    # is why the check runs on the raw body before anything parses it.
    decoded = json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":")).encode()
    assert decoded != raw
    assert not signature.verify(APP_SECRET, decoded, vector["x_hub_signature_256"])
    (item,) = parse(raw).messaging
    assert item.text == vector["text"]


def test_a_header_that_is_not_utf8_is_refused_not_an_error() -> None:
    assert not signature.verify(APP_SECRET, b"{}", "sha256=\udcff\udcfe")


# --- Messenger ----------------------------------------------------------------------------


def test_text_message() -> None:
    delivery = parse(body(fixture("messenger_text.botman-test.json")))
    assert delivery.object == "page" and delivery.known
    (item,) = delivery.messaging
    assert item.kind is ItemKind.MESSAGE
    assert (item.account, item.customer) == (PAGE_ID, PSID)
    assert item.mid == "mid.1480279487147:4388d3b344" == item.key
    assert item.text == "Hi"
    assert item.at == datetime.fromtimestamp(1480279487.147, UTC)
    event = message_event(item, received_at=RECEIVED, name="Иван Петров")
    assert event is not None
    assert event.channel is Channel.FACEBOOK
    assert event.external_id == item.mid
    assert event.contact.handles == (f"fb:{PSID}",)
    assert event.contact.name == "Иван Петров"
    assert event.text == "Hi"
    assert event.occurred_at == item.at


@pytest.mark.parametrize(
    "name", ["messenger_echo.botman-test.json", "messenger_echo_text.meta-docs.json"]
)
def test_echoes_are_the_page_speaking_whichever_way_round(name: str) -> None:
    data = fixture(name)
    if "object" not in data:  # Meta's current doc example: one item, sender = the page
        data = json.loads(json.dumps(data).replace("<PAGE_ID>", PAGE_ID).replace("<PSID>", PSID))
        data = envelope("page", PAGE_ID, data)
    (item,) = parse(body(data)).messaging
    assert item.kind is ItemKind.ECHO
    # The old format had the page as recipient, the current one as sender: the customer
    # is the other side either way.
    assert item.customer == PSID
    assert message_event(item, received_at=RECEIVED) is None


def test_quick_reply_postback_and_receipts() -> None:
    (quick,) = parse(body(fixture("messenger_quick_reply.botman-test.json"))).messaging
    assert (quick.kind, quick.text, quick.quick_reply) == (ItemKind.MESSAGE, "Red", "MY_PAYLOAD")
    event = message_event(quick, received_at=RECEIVED)
    assert event is not None and event.meta["quick_reply"] == "MY_PAYLOAD"

    (button,) = parse(body(fixture("messenger_postback.botman-test.json"))).messaging
    assert button.kind is ItemKind.POSTBACK and button.postback_payload == "MY_PAYLOAD"
    assert button.mid is None  # the old format: no mid, so who and when identify it
    assert button.key == f"postback:{PAGE_ID}:{PSID}:1480279487147"
    event = message_event(button, received_at=RECEIVED)
    assert event is not None and event.text == "Нажата кнопка: MY_PAYLOAD"

    (delivered,) = parse(body(fixture("messenger_delivery.botman-test.json"))).messaging
    assert delivered.kind is ItemKind.DELIVERY
    assert delivered.delivered == ("mid.1458668856218:ed81099e15d3f4f233",)
    (read,) = parse(body(fixture("messenger_read.botman-test.json"))).messaging
    assert read.kind is ItemKind.READ and read.watermark is not None
    assert message_event(delivered, received_at=RECEIVED) is None
    assert message_event(read, received_at=RECEIVED) is None


def test_doc_examples_quick_reply_and_reply_to() -> None:
    def item(name: str) -> dict[str, object]:
        text = json.dumps(fixture(name))
        return json.loads(
            text.replace("<PSID>", PSID)
            .replace("<PAGE_ID>", PAGE_ID)
            .replace("<DEVELOPER_DEFINED_PAYLOAD>", "CATEGORY_LARGE")
        )

    data = envelope(
        "page",
        PAGE_ID,
        item("messenger_message_text_quick_reply.meta-docs.json"),
        item("messenger_message_reply_to.meta-docs.json"),
    )
    quick, reply = parse(body(data)).messaging
    assert quick.quick_reply == "CATEGORY_LARGE" and quick.text == "hello, world!"
    assert reply.reply_to == "m_1fTq8oLumEyIp3Q2MR-aY7IfLZDamVrALniheU"
    event = message_event(reply, received_at=RECEIVED)
    assert event is not None and event.meta["reply_to"] == reply.reply_to


def test_attachments_are_metadata() -> None:
    (images,) = parse(body(fixture("messenger_image_attachments.botman-test.json"))).messaging
    event = message_event(images, received_at=RECEIVED)
    assert event is not None and event.text is None
    assert [(a.content_type, a.url) for a in event.attachments] == [
        ("image/*", "http://facebookimage.com/image.png"),
        ("image/*", "http://facebookimage.com/imageX.png"),
    ]
    (doc,) = parse(body(fixture("messenger_file_attachment.botman-test.json"))).messaging
    event = message_event(doc, received_at=RECEIVED)
    assert event is not None
    assert [(a.name, a.url) for a in event.attachments] == [
        ("file", "http://facebookfile.com/file.pdf")
    ]
    # Meta's doc example, with its type placeholder filled as a video.
    entry = json.loads(
        json.dumps(fixture("messenger_message_attachment_entry.meta-docs.json"))
        .replace("<image|video|audio|file|reel|ig_reel>", "video")
        .replace("<ATTACHMENT_URL>", "https://video.xx.fbcdn.net/v/clip.mp4")
        .replace("<PSID>", PSID)
        .replace("<PAGE_ID>", "682498302938465")
    )
    (video,) = parse(body({"object": "page", "entry": [entry]})).messaging
    assert video.account == "682498302938465"
    assert video.attachments[0].type == "video"


def test_ad_referral_keeps_the_ad_as_source_detail() -> None:
    item = fill(
        "messenger_referral_ad.meta-docs.txt",
        {
            "PSID": PSID,
            "PAGE_ID": PAGE_ID,
            "REF_DATA_IF_SPECIFIED_IN_THE_AD": "spring-lifts",
            "ID_OF_THE_AD": 120210000000000017,
            "TITLE_OF_THE_AD": "Подъёмники со склада",
            "URL_OF_THE_IMAGE_FROM_AD_THE_USER_IS_INTERESTED_IN": "https://scontent.example/a.jpg",
            "THUMBNAIL_URL_OF_THE_VIDEO_FROM_THE_AD": None,
            "ID_OF_THE_POST": "153125381133_10160000000000000",
            "PRODUCT_ID": None,
            "ID_OF_THE_PARTNER_APP_WELCOME_MESSAGE_FLOW": None,
        },
    )
    (ref,) = parse(body(envelope("page", PAGE_ID, item))).messaging
    assert ref.kind is ItemKind.REFERRAL
    assert ref.referral is not None
    # A JSON number id becomes its exact digits.
    assert ref.referral.ad_id == "120210000000000017"
    assert (ref.referral.source, ref.referral.type) == ("ADS", "OPEN_THREAD")
    event = message_event(ref, received_at=RECEIVED)
    assert event is not None
    assert event.source_detail == "ad 120210000000000017"
    assert event.meta["referral"]["ad_title"] == "Подъёмники со склада"

    short = fill(
        "messenger_referral_mme.meta-docs.txt",
        {"PSID": PSID, "PAGE_ID": PAGE_ID, "REF_DATA_PASSED_IN_M.ME_PARAM": "site-footer"},
    )
    (link,) = parse(body(envelope("page", PAGE_ID, short))).messaging
    assert link.referral is not None and link.referral.source == "SHORTLINK"
    event = message_event(link, received_at=RECEIVED)
    assert event is not None and event.source_detail is None
    (generic,) = parse(body(fixture("messenger_referral_generic.botman-test.json"))).messaging
    assert generic.kind is ItemKind.REFERRAL and generic.referral is not None
    assert generic.referral.ref == "MY_REF"


# --- Instagram ----------------------------------------------------------------------------


def test_instagram_envelope_filled_with_a_message() -> None:
    igsid = "6412849022070011"
    payload = ', "message": {"mid": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQx", "text": "Привет"}'
    raw = (
        fixture_bytes("instagram_messaging_envelope.meta-docs.txt")
        .decode()
        .replace("<NOTIFICATION_PAYLOAD>", payload)
        .replace("<TIME_META_SENT_NOTIFICATION>", "1700000000000")
        .replace("<TIME_WEBHOOK_WAS_TRIGGERED>", "1700000000000")
        .replace("<YOUR_APP_USERS_INSTAGRAM_ACCOUNT_ID>", IG_ID)
        .replace("<SENDER_ID>", igsid)
        .replace("<RECIPIENT_ID>", IG_ID)
    )
    (data,) = json.loads(raw)  # Meta prints the body inside a list
    (item,) = parse(body(data)).messaging
    assert item.object is MetaObject.INSTAGRAM
    assert (item.account, item.customer, item.text) == (IG_ID, igsid, "Привет")
    event = message_event(item, received_at=RECEIVED)
    assert event is not None
    assert event.channel is Channel.INSTAGRAM
    assert event.contact.handles == (f"ig:{igsid}",)


# --- Lead Ads, batches, the odd ones ---------------------------------------------------------


def test_leadgen_sample_two_changes_ids_as_strings() -> None:
    delivery = parse(fixture_bytes("leadgen_webhook_two_changes.meta-docs.json"))
    assert [c.leadgen_id for c in delivery.leadgen] == ["123123123123", "123123123124"]
    first = delivery.leadgen[0]
    assert first.account == "153125381133"
    assert (first.page_id, first.form_id, first.ad_id) == (
        "123123123",
        "12312312312",
        "12312312312",
    )
    assert first.created_at == datetime.fromtimestamp(1440120384, UTC)  # seconds, not ms


def test_a_batch_of_many_entries_is_read_whole() -> None:
    entries = []
    for n in range(1000):
        item = fixture("messenger_text.botman-test.json")["entry"][0]
        item["messaging"][0]["message"]["mid"] = f"mid.{n}"
        item["messaging"][0]["sender"]["id"] = str(10**15 + n)
        entries.append(item)
    leadgen = fixture("leadgen_webhook_two_changes.meta-docs.json")["entry"][0]
    delivery = parse(body({"object": "page", "entry": [*entries, leadgen]}))
    assert len(delivery.messaging) == 1000 and len(delivery.leadgen) == 2
    assert len({m.key for m in delivery.messaging}) == 1000
    assert not delivery.problems


def test_broken_pieces_are_named_and_the_rest_is_read() -> None:
    good = fixture("messenger_text.botman-test.json")["entry"][0]
    data = {
        "object": "page",
        "entry": [
            "not an entry",
            {"time": 1},  # no id
            {"id": PAGE_ID, "messaging": "nope"},
            {"id": PAGE_ID, "messaging": [1, {"message": {"mid": "m.x"}}]},
            {"id": PAGE_ID, "changes": [{"field": "leadgen", "value": {"page_id": 1}}]},
            {"id": PAGE_ID, "changes": [{"field": "feed", "value": {}}]},
            good,
        ],
    }
    delivery = parse(body(data))
    assert [m.text for m in delivery.messaging] == ["Hi"]
    assert delivery.ignored == ("feed",)
    assert len(delivery.problems) == 6, delivery.problems


@pytest.mark.parametrize(
    "raw", [b"", b"[]", b"not json", b'{"entry": []}', b'{"object": "page"}', b"[" * 100]
)
def test_what_is_no_webhook_at_all(raw: bytes) -> None:
    with pytest.raises(WebhookInvalid):
        parse(raw)


def test_other_objects_are_known_to_be_unknown() -> None:
    delivery = parse(fixture_bytes("signature_vector_pywa.body.json"))
    assert delivery.object == "whatsapp_business_account" and not delivery.known
    assert delivery.messaging == () and delivery.leadgen == ()


def test_ids_beyond_2_53_keep_their_digits() -> None:
    huge = 2**62 + 1  # a double would read it as ...904
    data = (
        b'{"object":"page","entry":[{"id":153125381133,"changes":[{"field":"leadgen",'
        b'"value":{"leadgen_id":' + str(huge).encode() + b"}}]}]}"
    )
    (change,) = parse(data).leadgen
    assert change.leadgen_id == str(huge)


def test_an_edit_names_the_message_it_changes() -> None:
    item = fill(
        "messenger_message_edit.meta-docs.txt",
        {
            "PSID": PSID,
            "PAGE_ID": PAGE_ID,
            "MESSAGE_ID": "m_1457764197618:41d102a3e1ae206a38",
            "TEXT": "Нужен подъёмник на 4 тонны",
            "INT": 1,
        },
    )
    (edit,) = parse(body(envelope("page", PAGE_ID, item))).messaging
    assert edit.kind is ItemKind.EDIT
    assert (edit.mid, edit.text, edit.edits) == (
        "m_1457764197618:41d102a3e1ae206a38",
        "Нужен подъёмник на 4 тонны",
        1,
    )
    assert edit.key == "edit:m_1457764197618:41d102a3e1ae206a38:1"


def test_a_postback_that_opened_the_thread_carries_its_referral() -> None:
    # Meta's postback page shows the item inside a field/value test notification, every
    # value a string: the value is the messaging item.
    item = fixture("messenger_postback_field_value.meta-docs.json")["value"]
    (button,) = parse(body(envelope("page", "PAGE-ID", item))).messaging
    assert button.kind is ItemKind.POSTBACK
    assert button.customer == "USER-REF-ID"  # no PSID yet: the chat plugin's user_ref
    assert button.mid == "m_MESSAGE-ID" == button.key
    assert button.at == datetime.fromtimestamp(1527459824, UTC)  # a string, in seconds
    assert button.referral is not None and button.referral.source == "SHORT-URL"
    event = message_event(button, received_at=RECEIVED)
    assert event is not None and event.text == "Нажата кнопка: TITLE-FOR-THE-CTA"
    assert event.meta["referral"]["ref"] == "USER-DEFINED-REFERRAL-PARAM"

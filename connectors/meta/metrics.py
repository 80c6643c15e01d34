"""Meta's own Prometheus series, per Page / Instagram account, on the app's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class MetaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.webhooks = Counter(
            "leadgate_meta_webhooks",
            "Meta webhook posts by object (page, instagram, ...) and result",
            ["object", "result"],
            registry=registry,
        )
        self.items = Counter(
            "leadgate_meta_items",
            "Webhook items by channel, Page/Instagram account and kind (message, postback, "
            "referral, echo, delivery, read, other, leadgen)",
            ["channel", "account", "kind"],
            registry=registry,
        )
        self.leadgen = Counter(
            "leadgate_meta_leadgen",
            "Lead Ads leads by Page and result (accepted, replayed, retry, dead)",
            ["page", "result"],
            registry=registry,
        )
        self.graph_errors = Counter(
            "leadgate_meta_graph_errors",
            "Failed Graph API calls by account, call (lead, profile, send) and Meta's error "
            "code (code/subcode, http_<status> or network)",
            ["account", "call", "code"],
            registry=registry,
        )
        self.names = Counter(
            "leadgate_meta_names",
            "Sender name lookups by account and result"
            " (fetched, cached, refused, failed, timeout, off)",
            ["account", "result"],
            registry=registry,
        )
        self.token_refused = Gauge(
            "leadgate_meta_token_refused",
            "1 while Meta refuses the account's token (OAuthException 190): renew it",
            ["account"],
            registry=registry,
        )

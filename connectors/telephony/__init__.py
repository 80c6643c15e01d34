"""Telephony: Zadarma, Mango Office and generic CTI webhooks turn calls into leads.

Kept import-free on purpose: gateway.config imports `connectors.telephony.settings`, and
anything imported here would be imported by the config module too (an import cycle).
The connector itself is `connectors.telephony.connector`.
"""

"""Telephony: Zadarma, Mango Office and generic CTI webhooks turn calls into leads.

The package's ChannelSpec is `connectors.telephony.spec.SPEC`; the connector itself is
`connectors.telephony.connector`, its config section `connectors.telephony.settings`.
"""

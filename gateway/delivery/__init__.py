"""Delivery: the outbox worker and the sinks (local, bitrix24, webhook) it hands leads to.

Kept import-free on purpose: gateway.config imports gateway.delivery.settings, and the
worker imports the app keys (which import gateway.config). Import the modules you need.
"""

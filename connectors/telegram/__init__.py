"""Telegram: any number of bots by webhook or long polling, on the conversation core."""

"""The site widget: chat, callback request and form in one script tag (docs/channels/widget.md)."""

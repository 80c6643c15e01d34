"""The company mailbox over IMAP: every customer email becomes a lead, exactly once.

Kept import-free on purpose: gateway.config imports `connectors.email.settings`, and this
package file runs first; anything heavier here would import the core back into itself.
The connector itself is `connectors.email.connector.build`.
"""

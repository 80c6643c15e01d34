"""The company mailbox over IMAP: every customer email becomes a lead, exactly once.

The package's ChannelSpec is `connectors.email.spec.SPEC`; the connector itself is
`connectors.email.connector`, its config section `connectors.email.settings`.
"""

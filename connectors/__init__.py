"""Channel connectors: each turns one vendor's input into LeadEvents."""

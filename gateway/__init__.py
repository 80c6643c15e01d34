"""leadgate core: channel-agnostic pipeline, calendar, identity, assignment, store, delivery."""

"""VK communities: Callback API events become leads and conversation messages."""

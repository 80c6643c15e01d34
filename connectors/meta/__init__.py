"""Facebook and Instagram through one Meta app: Messenger, Instagram Direct and Lead Ads."""

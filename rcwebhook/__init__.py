"""rocketchat-webhook: relays Prometheus Alertmanager notifications to Rocket.Chat incoming webhooks."""

__version__ = "1.0.0"

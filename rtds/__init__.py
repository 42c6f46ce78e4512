"""Shared core of realtime-datastreaming: settings, message schema, MQTT connection and stores."""

__version__ = "0.1.0"

"""Versioned notifications: what happened in the cloud, for anyone listening.

:mod:`.objects` holds the payloads (versioned objects, like Nova's
``nova.notifications.objects``); :mod:`.notifier` publishes them as JSON on
the ``notifications`` topic, where any AMQP consumer can read them from the
durable ``notifications`` queue. Event types are Nova's:
``instance.create.start``, ``instance.delete.end``, ``instance.power_off.error``,
``instance.update``, ``service.update`` ...
"""

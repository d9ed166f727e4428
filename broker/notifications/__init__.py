"""Notifications: DR events delivered to each instance's subscribers and to a broker-wide destination.

``fanout`` reads the DR event log after the ``notifications`` cursor and writes one ``outbox`` row per event
and destination, in the transaction that advances the cursor; ``outbox`` claims due rows with a lease and
records each attempt; ``webhook`` (CloudEvents 1.0, signed by ``signing``), ``email`` (SMTP) and
``event_notifications`` (IBM Cloud Event Notifications through IBM's SDK) send them; ``job`` runs both
halves as the ``notifications`` job. Setup: docs/evidence.md, Notifications.
"""

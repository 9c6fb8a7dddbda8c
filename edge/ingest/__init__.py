"""Fleet ingest: crack alerts, device status and snapshots from MQTT into one database.

``python -m edge.ingest --broker URI --db URL`` (docs/FLEET.md). Modules: ``config`` (every default),
``dburl`` (database URLs and engines), ``schema`` (tables and ordered migrations), ``rows`` (pure:
messages to rows), ``store`` (one transaction per batch, snapshot files), ``consumer`` (the MQTT 5
client: shared subscriptions, acknowledgement after commit), ``queries`` (the fleet summary and the
report's alerts).
"""

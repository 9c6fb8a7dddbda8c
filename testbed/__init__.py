"""Real components for the tests and the benchmarks alike: a private mosquitto on a loopback port, the
MQTT publisher in a subprocess of its own, valid alerts, and the broker/disk fault scenarios.

Both ``tests/`` and ``benchmarks/`` import this package; it imports neither (no circle), and nothing
in the shipped packages (contract, train, export, calibration, edge) imports it.
"""

"""The edge daemon (sources -> tiles -> backend -> measurement -> alerts -> MQTT) and the subscriber CLI.

Importing this package must never import torch, tensorrt or pycuda: backends import them lazily."""

"""The demo behind `make run`: the gateway in front of the demo mesh, a collector and a vote-bot (`python -m
gateway_devtools.demo`)."""

"""Load scenarios for the gateway, and the checker that reads back every trace they caused from the collector."""

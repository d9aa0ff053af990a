"""A local emojivoto-style mesh (web -> emoji, web -> voting) that takes part in the gateway's traces.

Each service reads the B3 headers it is given, honours the sampling decision, sends the context on with a CLIENT
span per call and reports its spans to a Zipkin collector. `--misbehave` breaks one of those rules on purpose.
"""

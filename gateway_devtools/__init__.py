"""The gateway's development tools, apart from the gateway: a Zipkin-compatible collector with a trace page
(`collector/`), an emojivoto-style demo mesh (`mesh/`) and the demo that runs them behind the gateway (`demo/`,
what `make run` starts).

They ship in the same distribution as the gateway, and their own dependencies in its `dev-tools` extra
(`pip install 'ingress-gateway[dev-tools]'`); the gateway never imports them (tests/unit/devtools/test_packaging.py).
"""

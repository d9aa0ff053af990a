"""Development tools shipped with the gateway: a Zipkin-compatible collector and a demo mesh."""
